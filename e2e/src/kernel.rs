//! The kernel target: null_blk devices (memory backed, so fio's verify reads back what it
//! wrote) exported by nvmet through configfs, one port per gateway on the guest's loopback.

use std::path::{Path, PathBuf};

/// The subsystem every namespace is exported in.
pub const NQN: &str = "nqn.2016-06.io.gwmon:e2e";
/// nvmet's configfs directory.
pub const NVMET: &str = "/sys/kernel/config/nvmet";
const NULLB: &str = "/sys/kernel/config/nullb";

pub fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("write {value:?} to {}: {e}", path.display()))
}

pub fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| format!("read {}: {e}", path.display()))
}

fn mkdir(path: &Path) -> Result<(), String> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("mkdir {}: {e}", path.display())),
    }
}

/// One nvmet port: its configfs id and the loopback address it listens on (port 4420).
#[derive(Debug, Clone)]
pub struct Port {
    pub id: u16,
    pub addr: String,
}

impl Port {
    pub fn dir(&self) -> PathBuf {
        Path::new(NVMET).join("ports").join(self.id.to_string())
    }

    /// The state the kernel serves ANA group `grp` with on this port.
    pub fn state(&self, grp: u32) -> Result<String, String> {
        read(&self.dir().join(format!("ana_groups/{grp}/ana_state")))
    }
}

/// Export namespace `nsid` (a 128 MiB memory-backed null_blk) in ANA group `grp` for each
/// `(nsid, grp)`, through every port; every listed ANA group starts inaccessible on every
/// port (group 1 is created optimized by the kernel), so nothing is served before a gateway
/// says so.
pub fn export(ports: &[Port], namespaces: &[(u32, u32)], ana_groups: &[u32]) -> Result<(), String> {
    let sub = Path::new(NVMET).join("subsystems").join(NQN);
    mkdir(&sub)?;
    write(&sub.join("attr_allow_any_host"), "1")?;
    for &(nsid, grp) in namespaces {
        let nb = Path::new(NULLB).join(format!("nullb{nsid}"));
        mkdir(&nb)?;
        write(&nb.join("size"), "128")?;
        write(&nb.join("memory_backed"), "1")?;
        write(&nb.join("power"), "1")?;
        let ns = sub.join(format!("namespaces/{nsid}"));
        mkdir(&ns)?;
        write(&ns.join("device_path"), &format!("/dev/nullb{nsid}"))?;
        write(&ns.join("ana_grpid"), &grp.to_string())?;
        write(&ns.join("enable"), "1")?;
    }
    for port in ports {
        let dir = port.dir();
        mkdir(&dir)?;
        write(&dir.join("addr_trtype"), "tcp")?;
        write(&dir.join("addr_adrfam"), "ipv4")?;
        write(&dir.join("addr_traddr"), &port.addr)?;
        write(&dir.join("addr_trsvcid"), "4420")?;
        for grp in ana_groups {
            let g = dir.join(format!("ana_groups/{grp}"));
            mkdir(&g)?;
            write(&g.join("ana_state"), "inaccessible")?;
        }
        let link = dir.join("subsystems").join(NQN);
        if !link.exists() {
            std::os::unix::fs::symlink(&sub, &link)
                .map_err(|e| format!("link {}: {e}", link.display()))?;
        }
    }
    Ok(())
}

/// Undo [`export`]: ports, then the subsystem, then the null_blk devices.
pub fn unexport(ports: &[Port], namespaces: &[(u32, u32)]) -> Result<(), String> {
    let rm = |p: &Path| std::fs::remove_dir(p).map_err(|e| format!("rmdir {}: {e}", p.display()));
    for port in ports {
        let dir = port.dir();
        if !dir.exists() {
            continue;
        }
        let link = dir.join("subsystems").join(NQN);
        if link.exists() {
            std::fs::remove_file(&link).map_err(|e| format!("unlink {}: {e}", link.display()))?;
        }
        for e in std::fs::read_dir(dir.join("ana_groups"))
            .map_err(|e| e.to_string())?
            .flatten()
        {
            if e.file_name() != "1" {
                rm(&e.path())?;
            }
        }
        rm(&dir)?;
    }
    let sub = Path::new(NVMET).join("subsystems").join(NQN);
    for &(nsid, _) in namespaces {
        let ns = sub.join(format!("namespaces/{nsid}"));
        if ns.exists() {
            write(&ns.join("enable"), "0")?;
            rm(&ns)?;
        }
        let nb = Path::new(NULLB).join(format!("nullb{nsid}"));
        if nb.exists() {
            write(&nb.join("power"), "0")?;
            rm(&nb)?;
        }
    }
    if sub.exists() {
        rm(&sub)?;
    }
    Ok(())
}

/// One replica as a storage backend exports it: a memory-backed null_blk namespace (nsid 1,
/// with a namespace UUID) in a subsystem of its own, on an nvmet port of its own.
#[derive(Debug, Clone)]
pub struct Replica {
    pub nqn: String,
    pub nullb: String,
    pub uuid: String,
    pub port: Port,
    pub size_mb: u32,
}

impl Replica {
    fn subsystem(&self) -> PathBuf {
        Path::new(NVMET).join("subsystems").join(&self.nqn)
    }

    fn link(&self) -> PathBuf {
        self.port.dir().join("subsystems").join(&self.nqn)
    }

    /// The null_blk's block device: named after its configfs item on kernels that do so,
    /// `nullb<index>` on the others.
    fn device(&self) -> Result<PathBuf, String> {
        let named = Path::new("/dev").join(&self.nullb);
        if named.exists() {
            return Ok(named);
        }
        let index = read(&Path::new(NULLB).join(&self.nullb).join("index"))?;
        Ok(Path::new("/dev").join(format!("nullb{index}")))
    }

    pub fn export(&self) -> Result<(), String> {
        let nb = Path::new(NULLB).join(&self.nullb);
        mkdir(&nb)?;
        write(&nb.join("size"), &self.size_mb.to_string())?;
        write(&nb.join("memory_backed"), "1")?;
        write(&nb.join("power"), "1")?;
        let sub = self.subsystem();
        mkdir(&sub)?;
        write(&sub.join("attr_allow_any_host"), "1")?;
        let ns = sub.join("namespaces/1");
        mkdir(&ns)?;
        write(
            &ns.join("device_path"),
            &self.device()?.display().to_string(),
        )?;
        write(&ns.join("device_uuid"), &self.uuid)?;
        write(&ns.join("enable"), "1")?;
        let dir = self.port.dir();
        mkdir(&dir)?;
        write(&dir.join("addr_trtype"), "tcp")?;
        write(&dir.join("addr_adrfam"), "ipv4")?;
        write(&dir.join("addr_traddr"), &self.port.addr)?;
        write(&dir.join("addr_trsvcid"), "4420")?;
        self.relink()
    }

    /// The port exports the subsystem (again).
    pub fn relink(&self) -> Result<(), String> {
        let link = self.link();
        if !link.exists() {
            std::os::unix::fs::symlink(self.subsystem(), &link)
                .map_err(|e| format!("link {}: {e}", link.display()))?;
        }
        Ok(())
    }

    /// The replica's port stops exporting it: the kernel drops every controller to it
    /// there, and hosts cannot connect again until it comes back.
    pub fn unlink(&self) -> Result<(), String> {
        let link = self.link();
        if std::fs::symlink_metadata(&link).is_ok() {
            std::fs::remove_file(&link).map_err(|e| format!("unlink {}: {e}", link.display()))?;
        }
        Ok(())
    }

    /// Undo [`Replica::export`].
    pub fn unexport(&self) -> Result<(), String> {
        let rm =
            |p: &Path| std::fs::remove_dir(p).map_err(|e| format!("rmdir {}: {e}", p.display()));
        self.unlink()?;
        let dir = self.port.dir();
        if dir.exists() {
            rm(&dir)?;
        }
        let sub = self.subsystem();
        let ns = sub.join("namespaces/1");
        if ns.exists() {
            write(&ns.join("enable"), "0")?;
            rm(&ns)?;
        }
        if sub.exists() {
            rm(&sub)?;
        }
        let nb = Path::new(NULLB).join(&self.nullb);
        if nb.exists() {
            write(&nb.join("power"), "0")?;
            rm(&nb)?;
        }
        Ok(())
    }
}
