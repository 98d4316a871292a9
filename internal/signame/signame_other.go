//go:build !unix

package signame

import "syscall"

func platformName(syscall.Signal) string { return "" }
