package gitlab

import "os"

type errString string

func (e errString) Error() string { return string(e) }

func readFileString(p string) (string, error) {
	b, err := os.ReadFile(p)
	return string(b), err
}
