/*
 * libdevmapper peer for dmthin-compare: the same workloads as the Rust peers,
 * issued in-process through libdevmapper's dm_task API, the way Docker's
 * devicemapper driver did. A comparison tool only; never linked into dmthin.
 *
 * Usage: dmthin-compare-libdm WORKLOAD ITERS POOL POOL_DEV FIRST_ID SIZE ORIGIN ORIGIN_ID
 *   WORKLOAD  cycle | snapshot | list | status | nodes (the cycle, checking
 *             /dev/mapper/<name> after activation and after removal)
 *   POOL      pool device name;  POOL_DEV  its MAJ:MIN
 *   FIRST_ID  first thin id to use (ids FIRST_ID .. FIRST_ID+ITERS)
 *   SIZE      thin device size in sectors
 *   ORIGIN    active origin device name; ORIGIN_ID its thin id (snapshot workload)
 *
 * Prints one line: RESULT peer=libdm workload=W iters=N ns=TOTAL
 * One untimed warm-up operation (id FIRST_ID+ITERS) runs first, as in every peer.
 * getppid() is called once right before and once right after the timed loop:
 * strace -e trace=ioctl,getppid uses the two calls as markers.
 *
 * Build: gcc -O2 -o dmthin-compare-libdm libdm_peer.c -ldevmapper
 */
#define _GNU_SOURCE
#include <libdevmapper.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

static void die(const char *what)
{
	fprintf(stderr, "dmthin-compare-libdm: %s failed\n", what);
	exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void message(const char *pool, const char *msg)
{
	struct dm_task *dmt = dm_task_create(DM_DEVICE_TARGET_MSG);
	if (!dmt || !dm_task_set_name(dmt, pool) || !dm_task_set_sector(dmt, 0) ||
	    !dm_task_set_message(dmt, msg) || !dm_task_run(dmt))
		die(msg);
	dm_task_destroy(dmt);
}

/* A task that generates a uevent: run it under a udev cookie and wait, as
 * libdm's own tools do (without udev, dm_udev_wait applies the node ops). */
static void run_cookie(struct dm_task *dmt, const char *what)
{
	uint32_t cookie = 0;
	if (!dm_task_set_cookie(dmt, &cookie, 0))
		die("dm_task_set_cookie");
	if (!dm_task_run(dmt)) {
		dm_udev_wait(cookie);
		die(what);
	}
	if (!dm_udev_wait(cookie))
		die("dm_udev_wait");
}

static void create_thin_dev(const char *name, uint64_t size, const char *params)
{
	struct dm_task *dmt = dm_task_create(DM_DEVICE_CREATE);
	if (!dmt || !dm_task_set_name(dmt, name) ||
	    !dm_task_add_target(dmt, 0, size, "thin", params))
		die("create task");
	run_cookie(dmt, "create");
	dm_task_destroy(dmt);
}

static void remove_dev(const char *name)
{
	struct dm_task *dmt = dm_task_create(DM_DEVICE_REMOVE);
	if (!dmt || !dm_task_set_name(dmt, name))
		die("remove task");
	run_cookie(dmt, "remove");
	dm_task_destroy(dmt);
}

static void suspend_dev(const char *name)
{
	struct dm_task *dmt = dm_task_create(DM_DEVICE_SUSPEND);
	if (!dmt || !dm_task_set_name(dmt, name) || !dm_task_run(dmt))
		die("suspend");
	dm_task_destroy(dmt);
}

static void resume_dev(const char *name)
{
	struct dm_task *dmt = dm_task_create(DM_DEVICE_RESUME);
	if (!dmt || !dm_task_set_name(dmt, name))
		die("resume task");
	run_cookie(dmt, "resume");
	dm_task_destroy(dmt);
}

static unsigned list_devices(void)
{
	unsigned n = 0, next = 0;
	struct dm_names *names;
	struct dm_task *dmt = dm_task_create(DM_DEVICE_LIST);
	if (!dmt || !dm_task_run(dmt) || !(names = dm_task_get_names(dmt)))
		die("list");
	if (names->dev) {
		do {
			names = (struct dm_names *)((char *)names + next);
			n++;
			next = names->next;
		} while (next);
	}
	dm_task_destroy(dmt);
	return n;
}

static uint64_t pool_status(struct dm_pool *mem, const char *pool)
{
	uint64_t start, length, used;
	char *type = NULL, *params = NULL;
	struct dm_status_thin_pool *st;
	struct dm_task *dmt = dm_task_create(DM_DEVICE_STATUS);
	if (!dmt || !dm_task_set_name(dmt, pool) || !dm_task_run(dmt))
		die("status");
	dm_get_next_target(dmt, NULL, &start, &length, &type, &params);
	if (!type || strcmp(type, "thin-pool") || !dm_get_status_thin_pool(mem, params, &st))
		die("thin-pool status parse");
	used = st->used_data_blocks;
	dm_pool_free(mem, st);
	dm_task_destroy(dmt);
	return used;
}

struct job {
	const char *workload, *pool, *pool_dev, *origin;
	unsigned origin_id;
	uint64_t size;
	struct dm_pool *mem;
	uint64_t sink, missing, stale;
};

/* The "nodes" workload: is /dev/mapper/<name> there when the call returned? */
static int node_exists(const char *name)
{
	char path[128];
	struct stat st;
	snprintf(path, sizeof path, "/dev/mapper/%s", name);
	return lstat(path, &st) == 0;
}

static void one_op(struct job *j, unsigned id)
{
	char msg[64], name[64], params[64];
	int nodes = !strcmp(j->workload, "nodes");
	if (!strcmp(j->workload, "cycle") || nodes) {
		snprintf(msg, sizeof msg, "create_thin %u", id);
		message(j->pool, msg);
		snprintf(name, sizeof name, "cmp-%u", id);
		snprintf(params, sizeof params, "%s %u", j->pool_dev, id);
		create_thin_dev(name, j->size, params);
		if (nodes && !node_exists(name))
			j->missing++;
		remove_dev(name);
		if (nodes && node_exists(name))
			j->stale++;
		snprintf(msg, sizeof msg, "delete %u", id);
		message(j->pool, msg);
	} else if (!strcmp(j->workload, "snapshot")) {
		suspend_dev(j->origin);
		snprintf(msg, sizeof msg, "create_snap %u %u", id, j->origin_id);
		message(j->pool, msg);
		resume_dev(j->origin);
	} else if (!strcmp(j->workload, "list")) {
		j->sink += list_devices();
	} else if (!strcmp(j->workload, "status")) {
		j->sink += pool_status(j->mem, j->pool);
	} else {
		fprintf(stderr, "unknown workload %s\n", j->workload);
		exit(2);
	}
}

int main(int argc, char **argv)
{
	if (argc != 9) {
		fprintf(stderr, "usage: %s WORKLOAD ITERS POOL POOL_DEV FIRST_ID SIZE ORIGIN ORIGIN_ID\n",
			argv[0]);
		return 2;
	}
	struct job j = {
		.workload = argv[1],
		.pool = argv[3],
		.pool_dev = argv[4],
		.size = strtoull(argv[6], NULL, 10),
		.origin = argv[7],
		.origin_id = (unsigned)strtoul(argv[8], NULL, 10),
		.mem = dm_pool_create("dmthin-compare", 1024),
	};
	unsigned iters = (unsigned)strtoul(argv[2], NULL, 10);
	unsigned first = (unsigned)strtoul(argv[5], NULL, 10);
	char version[64];

	dm_log_init_verbose(0);
	dm_udev_set_sync_support(1);
	/* libdm's first task opens the control node and checks the version. */
	if (!dm_driver_version(version, sizeof version))
		die("dm_driver_version");
	one_op(&j, first + iters); /* warm-up, untimed, like every peer */

	getppid();
	uint64_t t0 = now_ns();
	for (unsigned i = 0; i < iters; i++)
		one_op(&j, first + i);
	uint64_t t1 = now_ns();
	getppid();

	dm_pool_destroy(j.mem);
	printf("RESULT peer=libdm workload=%s iters=%u ns=%" PRIu64 " sink=%" PRIu64, j.workload,
	       iters, t1 - t0, j.sink);
	if (!strcmp(j.workload, "nodes"))
		printf(" missing=%" PRIu64 " stale=%" PRIu64, j.missing, j.stale);
	printf("\n");
	return 0;
}
