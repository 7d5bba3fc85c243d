package sqlite

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncData flushes f's data to stable storage. fdatasync skips the inode's timestamps,
// which every WAL write changes: that is what SQLite itself uses on Linux.
func syncData(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = unix.Fdatasync(int(fd))
			if serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: serr}
	}
	return nil
}
