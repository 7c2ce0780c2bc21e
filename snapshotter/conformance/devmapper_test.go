// The incumbent for comparison: containerd's built-in devmapper snapshotter
// (in-process, from the same Go sources) on the same conformance suite, with
// a fresh 1 GiB loop-file pool per subtest, as dmthin-snapshotter gets.
// Runs only with DMTHIN_BENCH=1 (it needs dmsetup, and udev for /dev/mapper
// nodes). TestLayerTimes measures Prepare+Commit and Remove per layer for
// both, over 100 layers.
package conformance

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/devmapper"
	"github.com/containerd/containerd/snapshots/devmapper/dmsetup"
	"github.com/containerd/containerd/snapshots/testsuite"
)

func loopFile(dir, name string, size int64) (string, error) {
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return "", err
	}
	f.Close()
	return mount.AttachLoopDevice(path)
}

func startDevmapper(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
	pool := fmt.Sprintf("dmthin-bench-pool-%d", time.Now().UnixNano())
	data, err := loopFile(root, "data", 1<<30)
	if err != nil {
		return nil, nil, err
	}
	meta, err := loopFile(root, "metadata", 64<<20)
	if err != nil {
		return nil, nil, err
	}
	if err := dmsetup.CreatePool(pool, data, meta, 64*1024/dmsetup.SectorSize); err != nil {
		return nil, nil, fmt.Errorf("creating pool %s: %w", pool, err)
	}
	sn, err := devmapper.NewSnapshotter(ctx, &devmapper.Config{
		RootPath:      filepath.Join(root, "snapshotter"),
		PoolName:      pool,
		BaseImageSize: "16Mb",
	})
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() error {
		sn.Close()
		// Its devices are <pool>-snap-N; remove them, then the pool.
		out, _ := exec.Command("dmsetup", "ls").Output()
		for _, line := range strings.Split(string(out), "\n") {
			name := strings.Fields(line + " x")[0]
			if strings.HasPrefix(name, pool+"-") {
				dmsetup.RemoveDevice(name, dmsetup.RemoveWithForce, dmsetup.RemoveWithRetries)
			}
		}
		err := dmsetup.RemoveDevice(pool, dmsetup.RemoveWithForce, dmsetup.RemoveWithRetries)
		mount.DetachLoopDevice(data, meta)
		return err
	}
	return sn, cleanup, nil
}

func needBench(t *testing.T) {
	if os.Getenv("DMTHIN_BENCH") != "1" {
		t.Skip("set DMTHIN_BENCH=1 for the comparison with containerd's devmapper snapshotter")
	}
}

func TestDevmapperSuite(t *testing.T) {
	needBench(t)
	testsuite.SnapshotterSuite(t, "devmapper", startDevmapper)
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// layerTimes stacks 100 layers (Prepare on the previous one, Commit), then
// removes them top down, and logs the medians.
func layerTimes(t *testing.T, name string, start func(context.Context, string) (snapshots.Snapshotter, func() error, error)) {
	ctx := namespaces.WithNamespace(context.Background(), "bench")
	sn, closer, err := start(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := closer(); err != nil {
			t.Error(err)
		}
	}()
	const n = 100
	var pc, rm []time.Duration
	parent := ""
	for i := 0; i < n; i++ {
		t0 := time.Now()
		key := fmt.Sprintf("active-%d", i)
		if _, err := sn.Prepare(ctx, key, parent); err != nil {
			t.Fatal(err)
		}
		layer := fmt.Sprintf("layer-%d", i)
		if err := sn.Commit(ctx, layer, key); err != nil {
			t.Fatal(err)
		}
		pc = append(pc, time.Since(t0))
		parent = layer
	}
	for i := n - 1; i >= 0; i-- {
		t0 := time.Now()
		if err := sn.Remove(ctx, fmt.Sprintf("layer-%d", i)); err != nil {
			t.Fatal(err)
		}
		rm = append(rm, time.Since(t0))
	}
	t.Logf("BENCH %s: Prepare+Commit median %.1f ms, Remove median %.1f ms (%d layers)",
		name, float64(median(pc).Microseconds())/1000, float64(median(rm).Microseconds())/1000, n)
}

func TestLayerTimes(t *testing.T) {
	needBench(t)
	t.Run("dmthin", func(t *testing.T) { layerTimes(t, "dmthin", startDaemon) })
	t.Run("devmapper", func(t *testing.T) { layerTimes(t, "devmapper", startDevmapper) })
}
