//! Speaking as another uid, and running a daemon as one: the tests run as
//! root.

use std::path::Path;

/// Runs `f` on a thread whose effective uid is `uid` (a raw `setresuid`
/// changes only the calling thread; SO_PEERCRED records the euid at
/// connect), so clients can speak as other uids. The tests run as root.
pub fn as_uid<R: Send + 'static>(uid: u32, f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::spawn(move || {
        // SAFETY: setresuid(2) on this thread only; -1 keeps real/saved ids.
        let rc = unsafe { libc::syscall(libc::SYS_setresuid, u32::MAX, uid, u32::MAX) };
        assert_eq!(rc, 0, "setresuid (tests run as root)");
        f()
    })
    .join()
    .expect("thread as another uid")
}

/// Changes the owner of `path` and everything below it.
pub fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).expect("chown");
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).expect("read_dir") {
            chown_tree(&entry.expect("dir entry").path(), uid, gid);
        }
    }
}
