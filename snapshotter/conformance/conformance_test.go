// containerd's snapshotter conformance suite (snapshots/testsuite) against
// dmthin-snapshotter, through containerd's proxy client (snapshots/proxy):
// the same path containerd takes to a proxy plugin.
//
// Every subtest gets a fresh daemon on a fresh device set (a loop-file pool
// in the subtest's root), which is torn down when the subtest ends.
//
// Build (static, no module download; see build.sh):
//
//	GOPATH=$tmp:/usr/share/gocode GO111MODULE=off CGO_ENABLED=0 go test -c
//
// Environment:
//
//	DMTHIN_SNAPSHOTTER       the daemon (default: dmthin-snapshotter on PATH)
//	DMTHIN_SNAPSHOTTER_ARGS  extra daemon arguments, space separated
//	                         (e.g. "--no-udev-sync")
//	DMTHIN_POOL_ARGS         pool options (default "--data-size 1G
//	                         --metadata-size 64M --base-size 16M", the base
//	                         size containerd's devmapper test uses)
package conformance

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"github.com/containerd/continuity/fs/fstest"
	"google.golang.org/grpc"
)

const defaultPoolArgs = "--data-size 1G --metadata-size 64M --base-size 16M"

func daemonPath() string {
	if p := os.Getenv("DMTHIN_SNAPSHOTTER"); p != "" {
		return p
	}
	if p, err := exec.LookPath("dmthin-snapshotter"); err == nil {
		return p
	}
	return "dmthin-snapshotter"
}

func poolArgs() []string {
	if v, ok := os.LookupEnv("DMTHIN_POOL_ARGS"); ok {
		return strings.Fields(v)
	}
	return strings.Fields(defaultPoolArgs)
}

// startDaemon starts dmthin-snapshotter on a fresh set at root and returns a
// proxy snapshotter connected to it, and a cleanup that stops the daemon
// and tears the set down.
func startDaemon(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
	socket := filepath.Join(root, "snapshotter.sock")
	args := []string{"--root", filepath.Join(root, "set"), "--socket", socket, "--teardown-on-exit", "--log-level", "warn"}
	args = append(args, poolArgs()...)
	args = append(args, strings.Fields(os.Getenv("DMTHIN_SNAPSHOTTER_ARGS"))...)
	cmd := exec.Command(daemonPath(), args...)
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	// The socket appears once the set is open and the template made.
	deadline := time.Now().Add(5 * time.Minute)
	for {
		if c, err := net.Dial("unix", socket); err == nil {
			c.Close()
			break
		}
		select {
		case err := <-exited:
			return nil, nil, fmt.Errorf("dmthin-snapshotter exited before serving: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return nil, nil, fmt.Errorf("dmthin-snapshotter did not serve %s within 5 minutes", socket)
		}
	}

	sn, conn, err := dial(socket)
	if err != nil {
		cmd.Process.Kill()
		<-exited
		return nil, nil, err
	}

	stopped := false
	cleanup := func() error {
		if stopped {
			return nil
		}
		stopped = true
		conn.Close()
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			return fmt.Errorf("signalling dmthin-snapshotter: %w", err)
		}
		select {
		case err := <-exited:
			if err != nil {
				return fmt.Errorf("dmthin-snapshotter exited with %v", err)
			}
		case <-time.After(2 * time.Minute):
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("dmthin-snapshotter did not stop within 2 minutes of SIGTERM")
		}
		if _, err := os.Stat(socket); err == nil {
			return fmt.Errorf("dmthin-snapshotter left its socket %s behind", socket)
		}
		return nil
	}
	return sn, cleanup, nil
}

// dial connects containerd's proxy snapshotter to the daemon at socket.
func dial(socket string) (snapshots.Snapshotter, *grpc.ClientConn, error) {
	conn, err := grpc.Dial("unix://"+socket,
		grpc.WithInsecure(),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("dialing %s: %w", socket, err)
	}
	return proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "dmthin"), conn, nil
}

func TestSnapshotterSuite(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (device-mapper and mounts)")
	}
	testsuite.SnapshotterSuite(t, "dmthin", startDaemon)

	// The usage check containerd runs for its devmapper snapshotter.
	t.Run("DmthinUsage", func(t *testing.T) {
		ctx := namespaces.WithNamespace(context.Background(), "testsuite")
		sn, closer, err := startDaemon(ctx, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := closer(); err != nil {
				t.Error(err)
			}
		}()
		testUsage(ctx, t, sn)
	})
}

// testUsage is containerd's devmapper testUsage: an empty layer uses some
// bytes (its filesystem), a layer with a 1 MiB file at least 1 MiB.
func testUsage(ctx context.Context, t *testing.T, sn snapshots.Snapshotter) {
	if _, err := sn.Prepare(ctx, "prepare-1", ""); err != nil {
		t.Fatal(err)
	}
	empty, err := sn.Usage(ctx, "prepare-1")
	if err != nil {
		t.Fatal(err)
	}
	if empty.Size <= 0 {
		t.Errorf("empty layer uses %d bytes, want > 0", empty.Size)
	}
	if err := sn.Commit(ctx, "layer-1", "prepare-1"); err != nil {
		t.Fatal(err)
	}
	const size = 1 << 20
	mounts, err := sn.Prepare(ctx, "prepare-2", "layer-1")
	if err != nil {
		t.Fatal(err)
	}
	apply := fstest.Apply(fstest.CreateRandomFile("/a", 12345679, size, 0777))
	if err := mount.WithTempMount(ctx, mounts, apply.Apply); err != nil {
		t.Fatal(err)
	}
	if err := sn.Commit(ctx, "layer-2", "prepare-2"); err != nil {
		t.Fatal(err)
	}
	u, err := sn.Usage(ctx, "layer-2")
	if err != nil {
		t.Fatal(err)
	}
	if u.Size < size {
		t.Errorf("layer-2 uses %d bytes, want at least %d", u.Size, size)
	}
	t.Logf("usage: empty layer %d bytes, layer with a 1 MiB file %d bytes", empty.Size, u.Size)
}
