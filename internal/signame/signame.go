// Package signame names signals the way operators write them ("SIGKILL"),
// for exit reasons and error messages.
package signame

import "syscall"

// Name is sig's conventional name, e.g. "SIGSEGV"; the runtime's
// description when the platform knows no name for it.
func Name(sig syscall.Signal) string {
	if n := platformName(sig); n != "" {
		return n
	}
	return sig.String()
}
