// Package gitlab is cleanroom's GitLab Runner custom-executor driver:
// `cleanroom gitlab config|prepare|run|cleanup`, called by gitlab-runner
// once per job stage, each call a separate process.
//
// The trust model, which every check in this package follows:
//
//   - The admin's policy file (Policy) is trusted; it is root-owned and
//     decoded strictly, so a typo is an error rather than a silently
//     ignored protection.
//   - The job response file ($JOB_RESPONSE_FILE, Response) is what GitLab
//     sent for the job. Security decisions (image, allowlist request,
//     secrets, repository, server) read it, never the CUSTOM_ENV_* copies,
//     which the job's own variables can override.
//   - The stage scripts are written by gitlab-runner but carry every job
//     variable in clear text, so they are rewritten before any sandbox sees
//     them: runner-only variables (SIGSTORE_ID_TOKEN and what the policy
//     names) are removed, and a stage whose script would still carry one
//     does not run.
//   - Everything a stage can write (the builds directory) is hostile to
//     the driver, which runs as root on the host: it is read and written
//     only through confined paths (os.Root, manifest.MatchArtifacts).
//
// Stages that talk to GitLab (sources, cache, artifacts) run in the
// admin's helper image with egress to the GitLab instance only; user code
// runs in the job image with egress to the job's allowlist only. Each stage
// is a fresh sandbox (runner.Sandboxed) sharing the job's builds directory.
package gitlab
