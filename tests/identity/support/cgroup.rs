//! A CPU limit for a process: a cgroup of the test's own with a CPU quota, as Kubernetes
//! gives a container with `resources.limits.cpu`, removed when the value is dropped.
//!
//! cgroup v2's `cpu.max` where the unified hierarchy has the `cpu` controller, else cgroup
//! v1's `cpu.cfs_quota_us` (a host with the `cpu` controller on v1, as this CI's is).

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

/// A cgroup with a CPU quota.
pub(crate) struct CpuLimit {
    dir: PathBuf,
}

impl CpuLimit {
    /// A new cgroup in which the processes together get `quota` of CPU time per `period`
    /// (`1 ms` per `100 ms` is Kubernetes' `cpu: 10m`).
    pub(crate) fn new(quota: Duration, period: Duration) -> Self {
        let name = format!(
            "iroh-identity-test-{}-{}",
            std::process::id(),
            super::random_u64()
        );
        let (quota, period) = (quota.as_micros(), period.as_micros());
        if let Some(root) = v2_root() {
            // The root may enable a controller for its children whatever it holds.
            fs::write(root.join("cgroup.subtree_control"), "+cpu").expect("enable cpu");
            let dir = root.join(name);
            fs::create_dir(&dir).expect("make the cgroup");
            let limit = Self { dir };
            fs::write(limit.dir.join("cpu.max"), format!("{quota} {period}")).expect("cpu.max");
            return limit;
        }
        let root = Path::new("/sys/fs/cgroup/cpu");
        assert!(
            root.join("cpu.cfs_quota_us").exists(),
            "no cgroup cpu controller, on v1 or v2"
        );
        let dir = root.join(name);
        fs::create_dir(&dir).expect("make the cgroup");
        let limit = Self { dir };
        fs::write(limit.dir.join("cpu.cfs_period_us"), period.to_string()).expect("period");
        fs::write(limit.dir.join("cpu.cfs_quota_us"), quota.to_string()).expect("quota");
        limit
    }

    /// Moves the process `pid`, every thread of it, into the cgroup.
    pub(crate) fn add(&self, pid: u32) {
        fs::write(self.dir.join("cgroup.procs"), pid.to_string()).expect("join the cgroup");
    }
}

impl Drop for CpuLimit {
    fn drop(&mut self) {
        // A cgroup is removed only once empty: what is left goes back to the parent.
        let parent = self
            .dir
            .parent()
            .expect("a parent cgroup")
            .join("cgroup.procs");
        if let Ok(procs) = fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = fs::write(&parent, pid);
            }
        }
        for _ in 0..100 {
            if fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The root of the unified (v2) hierarchy, if it has the `cpu` controller.
fn v2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|root| {
            fs::read_to_string(root.join("cgroup.controllers"))
                .is_ok_and(|controllers| controllers.split_whitespace().any(|c| c == "cpu"))
        })
}
