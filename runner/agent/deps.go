package agent

// Imported here until the code that uses them lands, so go.mod keeps them.
import (
	_ "github.com/chromedp/chromedp"
	_ "github.com/nats-io/nats-server/v2/server"
	_ "github.com/nats-io/nats.go"
	_ "github.com/nats-io/nats.go/jetstream"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "golang.org/x/time/rate"
)
