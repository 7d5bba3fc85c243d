//go:build !linux

package sqlite

import "os"

// syncData flushes f to stable storage (on macOS, os.File.Sync asks the drive to flush its
// cache too, as SQLite's fullfsync does).
func syncData(f *os.File) error { return f.Sync() }
