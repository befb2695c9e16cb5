// A client of golang.org/x/crypto/ssh (Debian 12's golang-golang-x-crypto-dev, 0.4), the
// library under Terraform, Packer, Gitea and DevPod, driven the way such tools drive it.
//
//	go-ssh-client HOST PORT USER MODE [COMMAND]
//
// MODE:
//   exec COMMAND     run COMMAND; print "stdout=", "stderr=" (quoted) and "status=N"
//   resize-early     RequestPty 80x40, WindowChange 100x100, Shell (as the Go tools do)
//   back-to-back     pty-req, window-change and shell sent with no wait in between
//   resize-after     RequestPty 80x40, Shell, then WindowChange 100x100 at once
// The three terminal modes type "stty size; exit" and print what the shell wrote.
// Authentication is "none" (a gateway on loopback with --auth none).
package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/crypto/ssh"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(2)
}

func ptyRequest(cols, rows uint32) []byte {
	return ssh.Marshal(struct {
		Term     string
		Columns  uint32
		Rows     uint32
		Width    uint32
		Height   uint32
		Modelist string
	}{"xterm", cols, rows, 0, 0, "\x00"})
}

func windowChange(cols, rows uint32) []byte {
	return ssh.Marshal(struct {
		Columns uint32
		Rows    uint32
		Width   uint32
		Height  uint32
	}{cols, rows, 0, 0})
}

func main() {
	if len(os.Args) < 5 {
		fail("usage: go-ssh-client HOST PORT USER MODE [COMMAND]")
	}
	host, port, user, mode := os.Args[1], os.Args[2], os.Args[3], os.Args[4]
	config := &ssh.ClientConfig{
		User:            user,
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		Timeout:         30 * time.Second,
	}
	client, err := ssh.Dial("tcp", net.JoinHostPort(host, port), config)
	if err != nil {
		fail("dial: %v", err)
	}
	defer client.Close()
	session, err := client.NewSession()
	if err != nil {
		fail("session: %v", err)
	}
	defer session.Close()
	var stdout, stderr bytes.Buffer
	session.Stdout = &stdout
	session.Stderr = &stderr
	if mode == "exec" {
		err = session.Run(os.Args[5])
		status := 0
		if exit, ok := err.(*ssh.ExitError); ok {
			status = exit.ExitStatus()
		} else if err != nil {
			fail("run: %v", err)
		}
		fmt.Printf("stdout=%q\nstderr=%q\nstatus=%d\n", stdout.String(), stderr.String(), status)
		return
	}
	stdin, err := session.StdinPipe()
	if err != nil {
		fail("stdin: %v", err)
	}
	switch mode {
	case "resize-early":
		if err = session.RequestPty("xterm", 40, 80, ssh.TerminalModes{}); err != nil {
			fail("pty: %v", err)
		}
		if err = session.WindowChange(100, 100); err != nil {
			fail("window-change: %v", err)
		}
		err = session.Shell()
	case "back-to-back":
		if _, err = session.SendRequest("pty-req", false, ptyRequest(80, 40)); err != nil {
			fail("pty: %v", err)
		}
		if _, err = session.SendRequest("window-change", false, windowChange(100, 100)); err != nil {
			fail("window-change: %v", err)
		}
		err = session.Shell()
	case "resize-after":
		if err = session.RequestPty("xterm", 40, 80, ssh.TerminalModes{}); err != nil {
			fail("pty: %v", err)
		}
		if err = session.Shell(); err != nil {
			fail("shell: %v", err)
		}
		err = session.WindowChange(100, 100)
	default:
		fail("unknown mode %s", mode)
	}
	if err != nil {
		fail("%s: %v", mode, err)
	}
	if _, err = io.WriteString(stdin, "stty size; exit\n"); err != nil {
		fail("write: %v", err)
	}
	if err = session.Wait(); err != nil {
		if _, ok := err.(*ssh.ExitError); !ok {
			fail("wait: %v", err)
		}
	}
	fmt.Print(stdout.String())
}
