// Package source puts a job's source onto disk for the agent, outside any
// sandbox: a git checkout fetched through the project's own egress proxy
// (FetchGit), or a tarball uploaded by a client (ExtractTarball). Both treat
// their input as hostile: the remote, ref and archive come from webhook
// payloads, configuration and API clients.
package source
