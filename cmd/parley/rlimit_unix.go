//go:build unix

package main

import "syscall"

// raiseFileLimit lifts the soft limit on open files to the hard one: a server or a load
// generator holds one descriptor per connection, and soft limits are often 1024.
func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}
