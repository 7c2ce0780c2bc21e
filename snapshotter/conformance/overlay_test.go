// A floor for the suite's wall time: containerd's overlayfs snapshotter
// (in-process, from the same Go sources) makes no devices and no
// filesystems, so what the suite takes with it is mostly the suite's own
// file work and mounts, which every snapshotter pays. Runs only with
// DMTHIN_BENCH=1.
package conformance

import (
	"context"
	"testing"

	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/overlay"
	"github.com/containerd/containerd/snapshots/testsuite"
)

func startOverlay(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
	sn, err := overlay.NewSnapshotter(root)
	if err != nil {
		return nil, nil, err
	}
	return sn, sn.Close, nil
}

func TestOverlaySuite(t *testing.T) {
	needBench(t)
	testsuite.SnapshotterSuite(t, "overlayfs", startOverlay)
}
