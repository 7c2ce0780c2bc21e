// A small client for dmthin's own VM tests (ioctl-tests/tests/
// snapshotter_cli_and_failpoints.rs): runs snapshot calls against a daemon
// that is already serving, through containerd's proxy client, and prints one
// line per call. It never fails on a call's error: the caller judges.
//
//	DMTHIN_CLIENT_SOCKET=/path/sock DMTHIN_CLIENT_OPS='prepare a -; commit c a' \
//	    dmthin-conformance.test -test.run '^TestDmthinClient$'
//
// Calls: prepare KEY PARENT, view KEY PARENT, commit NAME KEY, remove KEY,
// usage KEY, cleanup, walk (a PARENT of "-" is none). Lines printed:
// "CLIENT ok CALL...", "CLIENT err CALL...: MESSAGE", and for walk one
// "CLIENT snapshot NAME KIND PARENT" per snapshot.
package conformance

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
)

func TestDmthinClient(t *testing.T) {
	socket := os.Getenv("DMTHIN_CLIENT_SOCKET")
	if socket == "" {
		t.Skip("DMTHIN_CLIENT_SOCKET is not set")
	}
	sn, conn, err := dial(socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ctx = namespaces.WithNamespace(ctx, "default")
	for _, op := range strings.Split(os.Getenv("DMTHIN_CLIENT_OPS"), ";") {
		f := strings.Fields(op)
		if len(f) == 0 {
			continue
		}
		arg := func(i int) string {
			if i >= len(f) || f[i] == "-" {
				return ""
			}
			return f[i]
		}
		var err error
		switch f[0] {
		case "prepare":
			_, err = sn.Prepare(ctx, arg(1), arg(2))
		case "view":
			_, err = sn.View(ctx, arg(1), arg(2))
		case "commit":
			err = sn.Commit(ctx, arg(1), arg(2))
		case "remove":
			err = sn.Remove(ctx, arg(1))
		case "usage":
			var u snapshots.Usage
			if u, err = sn.Usage(ctx, arg(1)); err == nil {
				fmt.Printf("CLIENT usage %s %d\n", arg(1), u.Size)
			}
		case "cleanup":
			err = sn.(snapshots.Cleaner).Cleanup(ctx)
		case "walk":
			err = sn.Walk(ctx, func(ctx context.Context, i snapshots.Info) error {
				parent := i.Parent
				if parent == "" {
					parent = "-"
				}
				fmt.Printf("CLIENT snapshot %s %s %s\n", i.Name, i.Kind, parent)
				return nil
			})
		default:
			t.Fatalf("unknown call %q", op)
		}
		if err != nil {
			fmt.Printf("CLIENT err %s: %s\n", strings.Join(f, " "), strings.ReplaceAll(err.Error(), "\n", " "))
		} else {
			fmt.Printf("CLIENT ok %s\n", strings.Join(f, " "))
		}
	}
}
