//go:build darwin || dragonfly || freebsd || linux || netbsd || openbsd

package usage

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockSpool takes an exclusive advisory lock on path, so that two Recorders,
// in one process or two, never replay and delete each other's segments. The
// lock goes with the file descriptor: a crashed process leaves none behind.
func lockSpool(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("in use by another Recorder (%s is locked)", path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

func unlockSpool(f *os.File) {
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	f.Close()
}
