// Command hello prints a fresh UUID: a program with exactly one external
// module dependency, built inside a cleanroom sandbox whose only way out is
// the runner's module proxy endpoint.
package main

import (
	"fmt"

	"github.com/google/uuid"
)

func main() {
	fmt.Println("hello from a hermetic build:", uuid.NewString())
}
