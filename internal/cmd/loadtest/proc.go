package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat;
// it is 100 on every Linux the Go toolchain supports.
const clockTicks = 100

// child is a server process started by re-executing this binary.
type child struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
	addr  string
	key   string // the relay key the relay child minted
	done  chan error
}

// startChild runs `self kind 127.0.0.1:0 args...` and waits for it to
// listen. The child dies with the parent (Pdeathsig, and its stdin
// closing), so no server outlives the load tool.
func startChild(name, kind string, args ...string) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, append([]string{kind, "127.0.0.1:0"}, args...)...)
	cmd.Stderr = os.Stderr
	// A process group of its own keeps a terminal's Ctrl-C from the child: the
	// parent stops it in order, so that the relay writes its usage records.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{name: name, cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout), done: make(chan error, 1)}
	f, err := readyLine(c.out, 30*time.Second)
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	c.addr = f[0]
	if len(f) > 1 {
		c.key = f[1]
	}
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// stop closes the child's stdin, collects what it prints on the way out
// and waits for it, killing it if it takes longer than grace.
func (c *child) stop(grace time.Duration) []string {
	_ = c.stdin.Close()
	lines := make(chan []string, 1)
	go func() {
		var l []string
		for c.out.Scan() {
			l = append(l, c.out.Text())
		}
		lines <- l
	}()
	go func() { c.done <- c.cmd.Wait() }()
	select {
	case err := <-c.done:
		if err != nil {
			log.Printf("%s: %v", c.name, err)
		}
	case <-time.After(grace):
		log.Printf("%s: still running after %v; killed", c.name, grace)
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	select {
	case l := <-lines:
		return l
	case <-time.After(time.Second):
		return nil
	}
}

// cpuTime is the user + system CPU time a process used so far, all its
// threads included.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseStat(string(b))
}

// parseStat reads utime and stime (fields 14 and 15) of a /proc/PID/stat
// line. The command name, field 2, may hold spaces and parentheses, so the
// fields are counted from its closing parenthesis.
func parseStat(line string) (time.Duration, error) {
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat line")
	}
	f := strings.Fields(line[i+1:]) // f[0] is field 3
	if len(f) < 13 {
		return 0, errors.New("short /proc stat line")
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// rssKiB is a process's resident set size (VmRSS) in KiB.
func rssKiB(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			n, _ := strconv.ParseInt(string(bytes.TrimSuffix(bytes.TrimSpace(v), []byte(" kB"))), 10, 64)
			return n
		}
	}
	return 0
}

// raiseFileLimit lifts the soft open-file limit to the hard one and
// returns the result. The Go runtime raises it for this process already,
// but os/exec gives children the original limit back unless the program
// set it itself, as here.
func raiseFileLimit() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 1024
	}
	l.Cur = l.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l)
	return l.Cur
}
