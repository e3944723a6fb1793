// The agent page's only script: the live log and the copy button. Log
// text is added as text nodes, never parsed as HTML.
'use strict';
(function () {
  var log = document.getElementById('log');
  if (log && window.EventSource) {
    var status = document.getElementById('log-status');
    var live = log.dataset.live === '1';
    var ended = false;
    var es = new EventSource(log.dataset.src);
    // The server replays the log from its start on every connection, so
    // a reconnect starts over instead of duplicating lines.
    es.addEventListener('open', function () {
      log.textContent = '';
      status.textContent = live ? 'live' : '';
    });
    es.addEventListener('log', function (e) {
      var atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.appendChild(document.createTextNode(JSON.parse(e.data).text));
      if (atEnd) log.scrollTop = log.scrollHeight;
    });
    es.addEventListener('end', function (e) {
      ended = true;
      es.close();
      status.textContent = 'finished: ' + JSON.parse(e.data).state;
      // The steps, egress and artifacts are known now: show them.
      if (live) location.reload();
    });
    es.addEventListener('error', function () {
      if (!ended) status.textContent = 'reconnecting…';
    });
  }
  document.querySelectorAll('button[data-copy]').forEach(function (b) {
    b.addEventListener('click', function () {
      var el = document.getElementById(b.dataset.copy);
      var done = function () {
        b.textContent = 'Copied';
        setTimeout(function () { b.textContent = 'Copy'; }, 1500);
      };
      if (navigator.clipboard) {
        navigator.clipboard.writeText(el.textContent).then(done);
        return;
      }
      // No clipboard API outside a secure context (plain http to a remote
      // agent): select the command for the user to copy.
      var range = document.createRange();
      range.selectNodeContents(el);
      var sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
    });
  });
})();
