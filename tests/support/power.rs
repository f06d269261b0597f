//! A disk whose power can be cut: a FUSE filesystem, held in this test
//! process's memory, that keeps two copies of everything. Every operation
//! changes the live copy; `fsync`/`fdatasync` of a file copies its data into
//! the durable copy, and `fsync` of a directory copies its entries (a created,
//! renamed or removed name is durable only then). `cut()` is the power going:
//! the live copy becomes what was durable, and every write the kernel had
//! accepted but nobody had synced is gone, as on a real disk and unlike a
//! kill -9 (the idea of Jepsen's LazyFS; the code is ours).
//!
//! Stricter than ext4 in one way, on purpose: a new file's name survives only a
//! sync of its directory, never its own fsync. What this disk keeps, any POSIX
//! filesystem keeps.
//!
//! The mount answers with no kernel caching (direct I/O, zero attribute and
//! entry lifetimes) and is mounted afresh after each cut, so a process started
//! after the cut sees only what survived. Mounting needs root and /dev/fuse.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    Request, TimeOrNow, WriteFlags,
};

const NO_CACHE: Duration = Duration::ZERO;
/// What `statfs` reports: a 1 GiB disk, so no reserve check refuses.
const DISK_BYTES: u64 = 1 << 30;

#[derive(Clone)]
enum Node {
    File(Vec<u8>),
    Dir(BTreeMap<OsString, u64>),
}

/// What the cuts took, for the test to show (and to prove they took something).
#[derive(Clone, Copy, Debug, Default)]
pub struct Losses {
    pub cuts: u64,
    /// Bytes written (or files grown) and not synced when the power went.
    pub unsynced_bytes: u64,
    /// Names created, renamed or removed in a directory not synced since.
    pub unsynced_names: u64,
    pub file_syncs: u64,
    pub dir_syncs: u64,
}

#[derive(Default)]
struct Disk {
    live: HashMap<u64, Node>,
    durable: HashMap<u64, Node>,
    next_ino: u64,
    /// Bytes written to each file since its last sync.
    dirty_bytes: HashMap<u64, u64>,
    /// Names changed in each directory since its last sync.
    dirty_names: HashMap<u64, u64>,
    losses: Losses,
}

impl Disk {
    fn new() -> Disk {
        let root = || HashMap::from([(INodeNo::ROOT.0, Node::Dir(BTreeMap::new()))]);
        Disk { live: root(), durable: root(), next_ino: 2, ..Disk::default() }
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, size, perm, nlink) = match self.live.get(&ino)? {
            Node::File(data) => (FileType::RegularFile, data.len() as u64, 0o644, 1),
            Node::Dir(_) => (FileType::Directory, 0, 0o755, 2),
        };
        let t = SystemTime::UNIX_EPOCH;
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn dir(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.live.get_mut(&ino) {
            Some(Node::Dir(entries)) => Ok(entries),
            Some(Node::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn file(&mut self, ino: u64) -> Result<&mut Vec<u8>, Errno> {
        match self.live.get_mut(&ino) {
            Some(Node::File(data)) => Ok(data),
            Some(Node::Dir(_)) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn touch_names(&mut self, dir: u64) {
        *self.dirty_names.entry(dir).or_default() += 1;
    }

    fn touch_bytes(&mut self, file: u64, bytes: u64) {
        *self.dirty_bytes.entry(file).or_default() += bytes;
    }

    fn add(&mut self, parent: u64, name: &OsStr, node: Node) -> Result<FileAttr, Errno> {
        if self.dir(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.live.insert(ino, node);
        self.dir(parent)?.insert(name.to_owned(), ino);
        self.touch_names(parent);
        Ok(self.attr(ino).expect("just added"))
    }

    fn sync_file(&mut self, ino: u64) -> Result<(), Errno> {
        let node = self.live.get(&ino).cloned().ok_or(Errno::ENOENT)?;
        match node {
            Node::File(_) => {
                self.durable.insert(ino, node);
                self.dirty_bytes.remove(&ino);
                self.losses.file_syncs += 1;
                Ok(())
            }
            Node::Dir(_) => self.sync_dir(ino),
        }
    }

    /// The directory's names become durable; a name for an inode the durable
    /// copy has never seen brings it in empty (its data needs its own sync).
    fn sync_dir(&mut self, ino: u64) -> Result<(), Errno> {
        let entries = self.dir(ino)?.clone();
        for &child in entries.values() {
            if !self.durable.contains_key(&child) {
                let empty = match self.live.get(&child) {
                    Some(Node::Dir(_)) => Node::Dir(BTreeMap::new()),
                    _ => Node::File(Vec::new()),
                };
                self.durable.insert(child, empty);
            }
        }
        self.durable.insert(ino, Node::Dir(entries));
        self.dirty_names.remove(&ino);
        self.losses.dir_syncs += 1;
        Ok(())
    }

    fn cut(&mut self) {
        self.losses.cuts += 1;
        self.losses.unsynced_bytes += self.dirty_bytes.drain().map(|(_, n)| n).sum::<u64>();
        self.losses.unsynced_names += self.dirty_names.drain().map(|(_, n)| n).sum::<u64>();
        self.live = self.durable.clone();
    }
}

/// The filesystem as the kernel sees it: every request takes the disk's lock,
/// and every request made while the power is off fails with EIO.
struct Fs {
    disk: Arc<Mutex<Disk>>,
    powered: Arc<Mutex<bool>>,
}

impl Fs {
    fn disk(&self) -> Result<MutexGuard<'_, Disk>, Errno> {
        let powered = *self.powered.lock().unwrap();
        match powered {
            true => Ok(self.disk.lock().unwrap()),
            false => Err(Errno::EIO),
        }
    }
}

fn answer_entry(reply: ReplyEntry, r: Result<FileAttr, Errno>) {
    match r {
        Ok(attr) => reply.entry(&NO_CACHE, &attr, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn answer_attr(reply: ReplyAttr, r: Result<FileAttr, Errno>) {
    match r {
        Ok(attr) => reply.attr(&NO_CACHE, &attr),
        Err(e) => reply.error(e),
    }
}

fn answer(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for Fs {
    fn lookup(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        answer_entry(
            reply,
            self.disk().and_then(|mut d| {
                let ino = *d.dir(parent.0)?.get(name).ok_or(Errno::ENOENT)?;
                d.attr(ino).ok_or(Errno::ENOENT)
            }),
        );
    }

    fn getattr(&self, _: &Request, ino: INodeNo, _: Option<FileHandle>, reply: ReplyAttr) {
        answer_attr(reply, self.disk().and_then(|d| d.attr(ino.0).ok_or(Errno::ENOENT)));
    }

    fn setattr(
        &self,
        _: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        answer_attr(
            reply,
            self.disk().and_then(|mut d| {
                if let Some(size) = size {
                    let data = d.file(ino.0)?;
                    let grown = size.saturating_sub(data.len() as u64);
                    data.resize(size as usize, 0);
                    d.touch_bytes(ino.0, grown.max(1));
                }
                d.attr(ino.0).ok_or(Errno::ENOENT)
            }),
        );
    }

    fn mkdir(&self, _: &Request, parent: INodeNo, name: &OsStr, _mode: u32, _umask: u32, reply: ReplyEntry) {
        answer_entry(reply, self.disk().and_then(|mut d| d.add(parent.0, name, Node::Dir(BTreeMap::new()))));
    }

    fn create(
        &self,
        _: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.disk().and_then(|mut d| d.add(parent.0, name, Node::File(Vec::new()))) {
            Ok(attr) => reply.created(&NO_CACHE, &attr, Generation(0), FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.disk().and_then(|d| d.attr(ino.0).ok_or(Errno::ENOENT)) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        match self.disk().and_then(|mut d| {
            let data = d.file(ino.0)?;
            let start = (offset as usize).min(data.len());
            let end = (start + size as usize).min(data.len());
            Ok(data[start..end].to_vec())
        }) {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        bytes: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.disk().and_then(|mut d| {
            let data = d.file(ino.0)?;
            let end = offset as usize + bytes.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[offset as usize..end].copy_from_slice(bytes);
            d.touch_bytes(ino.0, bytes.len() as u64);
            Ok(bytes.len() as u32)
        }) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _: &Request, _ino: INodeNo, _fh: FileHandle, _lock: fuser::LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(&self, _: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        answer(reply, self.disk().and_then(|mut d| d.sync_file(ino.0)));
    }

    fn fsyncdir(&self, _: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        answer(reply, self.disk().and_then(|mut d| d.sync_dir(ino.0)));
    }

    fn fallocate(
        &self,
        _: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        answer(
            reply,
            self.disk().and_then(|mut d| {
                if mode != 0 {
                    return Err(Errno::EOPNOTSUPP);
                }
                let data = d.file(ino.0)?;
                let end = (offset + length) as usize;
                let grown = end.saturating_sub(data.len());
                if grown > 0 {
                    data.resize(end, 0);
                    d.touch_bytes(ino.0, grown as u64);
                }
                Ok(())
            }),
        );
    }

    fn unlink(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer(
            reply,
            self.disk().and_then(|mut d| {
                let entries = d.dir(parent.0)?;
                let ino = *entries.get(name).ok_or(Errno::ENOENT)?;
                if matches!(d.live.get(&ino), Some(Node::Dir(_))) {
                    return Err(Errno::EISDIR);
                }
                d.dir(parent.0)?.remove(name);
                d.touch_names(parent.0);
                Ok(())
            }),
        );
    }

    fn rmdir(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer(
            reply,
            self.disk().and_then(|mut d| {
                let ino = *d.dir(parent.0)?.get(name).ok_or(Errno::ENOENT)?;
                if !d.dir(ino)?.is_empty() {
                    return Err(Errno::ENOTEMPTY);
                }
                d.dir(parent.0)?.remove(name);
                d.touch_names(parent.0);
                Ok(())
            }),
        );
    }

    fn rename(
        &self,
        _: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        answer(
            reply,
            self.disk().and_then(|mut d| {
                if flags.contains(RenameFlags::RENAME_EXCHANGE) || flags.contains(RenameFlags::RENAME_WHITEOUT) {
                    return Err(Errno::EINVAL);
                }
                let ino = *d.dir(parent.0)?.get(name).ok_or(Errno::ENOENT)?;
                if let Some(&old) = d.dir(newparent.0)?.get(newname) {
                    if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                        return Err(Errno::EEXIST);
                    }
                    if let Ok(entries) = d.dir(old) {
                        if !entries.is_empty() {
                            return Err(Errno::ENOTEMPTY);
                        }
                    }
                }
                d.dir(parent.0)?.remove(name);
                d.dir(newparent.0)?.insert(newname.to_owned(), ino);
                d.touch_names(parent.0);
                d.touch_names(newparent.0);
                Ok(())
            }),
        );
    }

    fn readdir(&self, _: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let listed = self.disk().and_then(|mut d| {
            let entries = d.dir(ino.0)?.clone();
            let mut all =
                vec![(ino.0, FileType::Directory, OsString::from(".")), (ino.0, FileType::Directory, "..".into())];
            for (name, child) in entries {
                let kind = match d.live.get(&child) {
                    Some(Node::Dir(_)) => FileType::Directory,
                    _ => FileType::RegularFile,
                };
                all.push((child, kind, name));
            }
            Ok(all)
        });
        match listed {
            Ok(all) => {
                for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn statfs(&self, _: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let used: u64 = self
            .disk
            .lock()
            .unwrap()
            .live
            .values()
            .map(|n| match n {
                Node::File(data) => data.len() as u64,
                Node::Dir(_) => 0,
            })
            .sum();
        let free = (DISK_BYTES.saturating_sub(used)) / 4096;
        reply.statfs(DISK_BYTES / 4096, free, free, 1 << 20, 1 << 20, 4096, 255, 4096);
    }
}

/// The disk, mounted at `path()`. Unmounted when dropped.
pub struct PowerCutDisk {
    disk: Arc<Mutex<Disk>>,
    powered: Arc<Mutex<bool>>,
    session: Option<fuser::BackgroundSession>,
    dir: tempfile::TempDir,
}

impl PowerCutDisk {
    /// Mounts an empty disk; `None` (the test skipped, loudly) where FUSE
    /// cannot be mounted, which in CI is a failure.
    pub fn mount() -> Option<PowerCutDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = PowerCutDisk {
            disk: Arc::new(Mutex::new(Disk::new())),
            powered: Arc::new(Mutex::new(true)),
            session: None,
            dir,
        };
        match disk.attach() {
            Ok(()) => Some(disk),
            Err(e) if super::in_ci() => panic!("CI must be able to mount a FUSE filesystem (root, /dev/fuse): {e}"),
            Err(e) => {
                eprintln!("SKIPPED: cannot mount the power-cut disk ({e}); it needs root and /dev/fuse, as `bash .ci/run` has");
                None
            }
        }
    }

    fn attach(&mut self) -> std::io::Result<()> {
        let fs = Fs { disk: self.disk.clone(), powered: self.powered.clone() };
        let mut config = fuser::Config::default();
        config.mount_options = vec![fuser::MountOption::FSName("edgefn-power-cut".into())];
        config.acl = fuser::SessionACL::All;
        config.n_threads = Some(2);
        self.session = Some(fuser::spawn_mount(fs, self.dir.path(), &config)?);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The power goes: from now on every request fails with EIO, and the disk
    /// holds only what was synced. Call `restore` once every process using the
    /// disk is dead.
    pub fn cut(&self) {
        let mut powered = self.powered.lock().unwrap();
        *powered = false;
        self.disk.lock().unwrap().cut();
    }

    /// The power is back: the disk is mounted afresh, with no kernel cache of
    /// what it held before.
    pub fn restore(&mut self) {
        self.detach();
        *self.powered.lock().unwrap() = true;
        self.attach().expect("mounting the power-cut disk again");
    }

    /// Unmounts the disk lazily (`MNT_DETACH`), then waits for its session to
    /// end. A plain unmount fails with EBUSY while the kernel still owes us the
    /// release of a file closed a moment before (a killed process's, say); a
    /// detached mount ends once that release has been answered.
    fn detach(&mut self) {
        if let Some(session) = self.session.take() {
            use std::os::unix::ffi::OsStrExt;
            let path = std::ffi::CString::new(self.dir.path().as_os_str().as_bytes()).unwrap();
            let detached = unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
            assert_eq!(detached, 0, "unmounting the power-cut disk: {}", std::io::Error::last_os_error());
            // The kernel ends a detached mount's connection as aborted: a
            // session thread reading then gets ECONNABORTED rather than ENODEV
            // (fuser takes only the latter for an unmount). Either is the end.
            match session.join() {
                Err(e) if e.raw_os_error() != Some(libc::ECONNABORTED) => panic!("the power-cut disk's session: {e}"),
                _ => {}
            }
        }
    }

    pub fn losses(&self) -> Losses {
        self.disk.lock().unwrap().losses
    }

    /// Every file on the disk now, with its size (for a message on failure).
    pub fn listing(&self) -> Vec<(PathBuf, u64)> {
        let d = self.disk.lock().unwrap();
        let mut out = Vec::new();
        let mut stack = vec![(PathBuf::new(), INodeNo::ROOT.0)];
        while let Some((path, ino)) = stack.pop() {
            if let Some(Node::Dir(entries)) = d.live.get(&ino) {
                for (name, &child) in entries {
                    match d.live.get(&child) {
                        Some(Node::Dir(_)) => stack.push((path.join(name), child)),
                        Some(Node::File(data)) => out.push((path.join(name), data.len() as u64)),
                        None => {}
                    }
                }
            }
        }
        out.sort();
        out
    }
}

impl Drop for PowerCutDisk {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            use std::os::unix::ffi::OsStrExt;
            let path = std::ffi::CString::new(self.dir.path().as_os_str().as_bytes()).unwrap();
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
            let _ = session.join();
        }
    }
}
