package agent

import "net/http"

// registerWeb adds the web page's routes.
func (a *Agent) registerWeb(mux *http.ServeMux) {}
