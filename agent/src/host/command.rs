//! The `nvme` and `mdadm` invocations the agent makes, as typed values.
//!
//! A command is data first and argv second: the simulated host interprets the value, the
//! Linux host runs its argv, and tests check the argv without running anything. Block
//! devices are named as the kernel names them (`nvme3n1`) and turned into `/dev/` paths
//! only here.

use std::fmt;

use gwmon_proto::domain::Nqn;

use super::model::{Address, ArrayName, Transport};

/// The two tools the agent drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Nvme,
    Mdadm,
}

impl Tool {
    pub fn program(self) -> &'static str {
        match self {
            Tool::Nvme => "nvme",
            Tool::Mdadm => "mdadm",
        }
    }

    /// The distribution package that provides it, for the "not found" message.
    pub fn package(self) -> &'static str {
        match self {
            Tool::Nvme => "nvme-cli",
            Tool::Mdadm => "mdadm",
        }
    }
}

/// What `nvme connect` needs to reach one replica's target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectSpec {
    pub transport: Transport,
    pub address: Address,
    pub nqn: Nqn,
    /// This host's NQN; `None` leaves nvme-cli to use `/etc/nvme/hostnqn`.
    pub host_nqn: Option<Nqn>,
    pub host_id: Option<String>,
}

/// One invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostCommand {
    /// Connect with ctrl-loss-tmo -1: the kernel keeps reconnecting a lost controller
    /// forever instead of deleting it, so the namespace's block device (and with it the md
    /// leg's identity) survives a target outage of any length. The agent then sets the
    /// controller's fast_io_fail_tmo in sysfs ([`super::Host::set_fast_io_fail`]; nvme-cli
    /// before 2.4 has no option for it), so I/O to a controller lost that long fails
    /// instead of waiting for it: md sees the error and fails the leg.
    NvmeConnect(ConnectSpec),
    /// Disconnect every controller of a subsystem.
    NvmeDisconnect {
        nqn: Nqn,
    },
    /// Disconnect one controller (`nvme3`): when another host NQN on the same kernel also
    /// has controllers to the subsystem, `-n` would take those down too.
    NvmeDisconnectController {
        controller: String,
    },
    /// Create a RAID1 over fresh legs.
    MdCreate {
        name: ArrayName,
        legs: Vec<String>,
    },
    /// Assemble an array whose legs already carry its superblock.
    MdAssemble {
        name: ArrayName,
        legs: Vec<String>,
    },
    /// Add a leg (a replacement, or a returning replica): md recovers onto it.
    MdAdd {
        name: ArrayName,
        leg: String,
    },
    /// Mark a leg faulty, so md stops using it and it can be removed.
    MdFail {
        name: ArrayName,
        leg: String,
    },
    /// Take a faulty or spare leg out of the array.
    MdRemove {
        name: ArrayName,
        leg: String,
    },
    /// Grow the array to the size of its (grown) legs.
    MdGrowSize {
        name: ArrayName,
    },
    MdStop {
        name: ArrayName,
    },
    /// Whether a device carries an md superblock: exits non-zero with "No md superblock
    /// detected" when it does not.
    MdExamine {
        leg: String,
    },
}

impl HostCommand {
    pub fn tool(&self) -> Tool {
        match self {
            HostCommand::NvmeConnect(_)
            | HostCommand::NvmeDisconnect { .. }
            | HostCommand::NvmeDisconnectController { .. } => Tool::Nvme,
            _ => Tool::Mdadm,
        }
    }

    /// The arguments after the program name.
    pub fn args(&self) -> Vec<String> {
        let dev = |d: &str| format!("/dev/{d}");
        let mut a: Vec<String> = Vec::new();
        match self {
            HostCommand::NvmeConnect(spec) => {
                a.extend([
                    "connect".into(),
                    "-t".into(),
                    spec.transport.to_string(),
                    "-a".into(),
                    spec.address.traddr.clone(),
                ]);
                if !spec.address.trsvcid.is_empty() {
                    a.extend(["-s".into(), spec.address.trsvcid.clone()]);
                }
                a.extend(["-n".into(), spec.nqn.to_string()]);
                a.push("--ctrl-loss-tmo=-1".into());
                if let Some(h) = &spec.host_nqn {
                    a.push(format!("--hostnqn={h}"));
                }
                if let Some(h) = &spec.host_id {
                    a.push(format!("--hostid={h}"));
                }
            }
            HostCommand::NvmeDisconnect { nqn } => {
                a.extend(["disconnect".into(), "-n".into(), nqn.to_string()]);
            }
            HostCommand::NvmeDisconnectController { controller } => {
                a.extend(["disconnect".into(), "-d".into(), dev(controller)]);
            }
            HostCommand::MdCreate { name, legs } => {
                a.extend([
                    "--create".into(),
                    name.dev_path(),
                    // No "Continue creating array?" prompt: there is no one to answer it.
                    "--run".into(),
                    format!("--name={name}"),
                    // The name is the volume's, not this host's: another host assembling
                    // the array after a migration must see the same /dev/md/<name>.
                    "--homehost=any".into(),
                    "--metadata=1.2".into(),
                    "--level=1".into(),
                    format!("--raid-devices={}", legs.len()),
                    // A leg back after a short loss resyncs only the regions written
                    // meanwhile, not the whole volume.
                    "--bitmap=internal".into(),
                    // The replicas are new and empty (the cluster hands out a fresh
                    // volume's replicas for creation only), so there is nothing to copy;
                    // os-brick does the same. Without it every new volume starts with a
                    // full resync over the fabric.
                    "--assume-clean".into(),
                    // A leg whose I/O fails is failed at once rather than retried: the
                    // other legs carry on, and the agent reports and replaces it.
                    "--failfast".into(),
                ]);
                a.extend(legs.iter().map(|l| dev(l)));
            }
            HostCommand::MdAssemble { name, legs } => {
                a.extend(["--assemble".into(), name.dev_path(), "--run".into()]);
                a.extend(legs.iter().map(|l| dev(l)));
            }
            HostCommand::MdAdd { name, leg } => {
                a.extend([
                    "--manage".into(),
                    name.dev_path(),
                    "--add".into(),
                    "--failfast".into(),
                    dev(leg),
                ]);
            }
            HostCommand::MdFail { name, leg } => {
                a.extend([
                    "--manage".into(),
                    name.dev_path(),
                    "--fail".into(),
                    dev(leg),
                ]);
            }
            HostCommand::MdRemove { name, leg } => {
                a.extend([
                    "--manage".into(),
                    name.dev_path(),
                    "--remove".into(),
                    dev(leg),
                ]);
            }
            HostCommand::MdGrowSize { name } => {
                a.extend(["--grow".into(), name.dev_path(), "--size=max".into()]);
            }
            HostCommand::MdStop { name } => {
                a.extend(["--stop".into(), name.dev_path()]);
            }
            HostCommand::MdExamine { leg } => {
                a.extend(["--examine".into(), dev(leg)]);
            }
        }
        a
    }
}

impl fmt::Display for HostCommand {
    /// The command line as a person would type it (for logs and error messages).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tool().program())?;
        for arg in self.args() {
            write!(f, " {arg}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> ArrayName {
        "vol1".parse().expect("name")
    }

    #[test]
    fn connect_never_gives_up_on_a_lost_controller() {
        let cmd = HostCommand::NvmeConnect(ConnectSpec {
            transport: Transport::Tcp,
            address: Address {
                traddr: "10.0.0.1".into(),
                trsvcid: "4420".into(),
            },
            nqn: "nqn.2016-06.io.spdk:r1".parse().expect("nqn"),
            host_nqn: Some("nqn.2014-08.org.nvmexpress:host1".parse().expect("nqn")),
            host_id: None,
        });
        assert_eq!(
            cmd.to_string(),
            "nvme connect -t tcp -a 10.0.0.1 -s 4420 -n nqn.2016-06.io.spdk:r1 \
             --ctrl-loss-tmo=-1 --hostnqn=nqn.2014-08.org.nvmexpress:host1"
        );
    }

    #[test]
    fn create_is_raid1_with_bitmap_and_failfast() {
        let cmd = HostCommand::MdCreate {
            name: name(),
            legs: vec!["nvme1n1".into(), "nvme2n1".into()],
        };
        let args = cmd.args();
        for want in [
            "--create",
            "/dev/md/vol1",
            "--level=1",
            "--raid-devices=2",
            "--bitmap=internal",
            "--failfast",
            "--run",
            "--name=vol1",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} in {args:?}");
        }
        assert_eq!(
            &args[args.len() - 2..],
            ["/dev/nvme1n1".to_owned(), "/dev/nvme2n1".to_owned()]
        );
        assert_eq!(cmd.tool(), Tool::Mdadm);
    }

    #[test]
    fn manage_commands() {
        let leg = "nvme3n1".to_owned();
        assert_eq!(
            HostCommand::MdAdd {
                name: name(),
                leg: leg.clone()
            }
            .to_string(),
            "mdadm --manage /dev/md/vol1 --add --failfast /dev/nvme3n1"
        );
        assert_eq!(
            HostCommand::MdGrowSize { name: name() }.to_string(),
            "mdadm --grow /dev/md/vol1 --size=max"
        );
        assert_eq!(
            HostCommand::NvmeDisconnect {
                nqn: "nqn.2016-06.io.spdk:r1".parse().expect("nqn")
            }
            .to_string(),
            "nvme disconnect -n nqn.2016-06.io.spdk:r1"
        );
    }

    #[test]
    fn array_names_are_checked() {
        assert!("vol-1_a.b".parse::<ArrayName>().is_ok());
        for bad in ["", "-x", ".x", "a/b", "a b", &"x".repeat(33)] {
            assert!(bad.parse::<ArrayName>().is_err(), "{bad:?}");
        }
    }
}
