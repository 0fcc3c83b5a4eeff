//go:build !(darwin || dragonfly || freebsd || linux || netbsd || openbsd)

package usage

import "os"

// lockSpool only creates the lock file where flock is not available: there,
// keeping one Recorder per spool directory is up to the deployment.
func lockSpool(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
}

func unlockSpool(f *os.File) { f.Close() }
