//! A gateway's part of the map: `v1::MapSlice` <-> [`MapSlice`]. The monitor sends it; the
//! gateway client parses it, so both directions are checked.

use std::collections::HashSet;

use super::{at, bounded, known_enum, MAX_REPORT_NAMESPACES, MAX_SUBSYSTEMS};
use crate::domain::{
    AnaAccess, AnaGroupId, AnaGroupView, Epoch, Field, FieldError, Invalid, MapSlice, Namespace,
    NamespacePlacement, Nqn, SliceAvailability,
};
use crate::v1;

impl TryFrom<v1::AnaAccess> for AnaAccess {
    type Error = Invalid;

    fn try_from(wire: v1::AnaAccess) -> Result<Self, Invalid> {
        match wire {
            v1::AnaAccess::Unspecified => Err(Invalid::Unspecified),
            v1::AnaAccess::Optimized => Ok(AnaAccess::Optimized),
            v1::AnaAccess::Inaccessible => Ok(AnaAccess::Inaccessible),
        }
    }
}

impl From<AnaAccess> for v1::AnaAccess {
    fn from(a: AnaAccess) -> Self {
        match a {
            AnaAccess::Optimized => v1::AnaAccess::Optimized,
            AnaAccess::Inaccessible => v1::AnaAccess::Inaccessible,
        }
    }
}

impl TryFrom<v1::SliceAvailability> for SliceAvailability {
    type Error = Invalid;

    fn try_from(wire: v1::SliceAvailability) -> Result<Self, Invalid> {
        match wire {
            v1::SliceAvailability::Unspecified => Err(Invalid::Unspecified),
            v1::SliceAvailability::Created => Ok(SliceAvailability::Created),
            v1::SliceAvailability::Available => Ok(SliceAvailability::Available),
            v1::SliceAvailability::Unavailable => Ok(SliceAvailability::Unavailable),
        }
    }
}

impl From<SliceAvailability> for v1::SliceAvailability {
    fn from(a: SliceAvailability) -> Self {
        match a {
            SliceAvailability::Created => v1::SliceAvailability::Created,
            SliceAvailability::Available => v1::SliceAvailability::Available,
            SliceAvailability::Unavailable => v1::SliceAvailability::Unavailable,
        }
    }
}

impl TryFrom<v1::AnaGroupView> for AnaGroupView {
    type Error = FieldError;

    fn try_from(wire: v1::AnaGroupView) -> Result<Self, FieldError> {
        Ok(AnaGroupView {
            ana_group: AnaGroupId::new(wire.ana_group).field("ana_group")?,
            access: known_enum::<v1::AnaAccess>(wire.access)
                .and_then(AnaAccess::try_from)
                .field("access")?,
            fence_epoch: Epoch(wire.fence_epoch),
            fence_complete: wire.fence_complete,
        })
    }
}

impl From<AnaGroupView> for v1::AnaGroupView {
    fn from(v: AnaGroupView) -> Self {
        v1::AnaGroupView {
            ana_group: v.ana_group.get(),
            access: v1::AnaAccess::from(v.access).into(),
            fence_epoch: v.fence_epoch.0,
            fence_complete: v.fence_complete,
        }
    }
}

impl TryFrom<v1::NamespacePlacement> for NamespacePlacement {
    type Error = FieldError;

    fn try_from(wire: v1::NamespacePlacement) -> Result<Self, FieldError> {
        Ok(NamespacePlacement {
            nqn: Nqn::try_from(wire.nqn).field("nqn")?,
            nsid: Namespace::check_nsid(wire.nsid).field("nsid")?,
            ana_group: AnaGroupId::new(wire.ana_group).field("ana_group")?,
        })
    }
}

impl From<NamespacePlacement> for v1::NamespacePlacement {
    fn from(p: NamespacePlacement) -> Self {
        v1::NamespacePlacement {
            nqn: p.nqn.into(),
            nsid: p.nsid,
            ana_group: p.ana_group.get(),
        }
    }
}

/// At most one view per ANA group id, and there are at most [`AnaGroupId::MAX`] ids.
const MAX_ANA_GROUPS: usize = AnaGroupId::MAX as usize;

impl TryFrom<v1::MapSlice> for MapSlice {
    type Error = FieldError;

    /// Refuses an NQN or an ANA group listed twice: two views of one ANA group could
    /// disagree about whether it is optimized, and the gateway must not have to guess. The
    /// result is canonical ([`MapSlice::canonicalize`]).
    fn try_from(wire: v1::MapSlice) -> Result<Self, FieldError> {
        let ana_group = AnaGroupId::new(wire.ana_group).field("ana_group")?;
        let availability = known_enum::<v1::SliceAvailability>(wire.availability)
            .and_then(SliceAvailability::try_from)
            .field("availability")?;

        // A slice names the subsystems the gateway serves, so the beacon's cap applies.
        bounded(&wire.nqns, MAX_SUBSYSTEMS, "nqns")?;
        let mut nqns = Vec::with_capacity(wire.nqns.len());
        let mut seen_nqns = HashSet::with_capacity(wire.nqns.len());
        for (i, n) in wire.nqns.into_iter().enumerate() {
            let n = Nqn::try_from(n).map_err(|r| FieldError::new(at("nqns", i), r))?;
            if !seen_nqns.insert(n.clone()) {
                return Err(FieldError::new(
                    at("nqns", i),
                    Invalid::Duplicate(n.to_string()),
                ));
            }
            nqns.push(n);
        }

        bounded(&wire.ana_groups, MAX_ANA_GROUPS, "ana_groups")?;
        let mut ana_groups = Vec::with_capacity(wire.ana_groups.len());
        let mut seen_groups = HashSet::with_capacity(wire.ana_groups.len());
        for (i, v) in wire.ana_groups.into_iter().enumerate() {
            let v = AnaGroupView::try_from(v).map_err(|e| e.within(at("ana_groups", i)))?;
            if !seen_groups.insert(v.ana_group) {
                return Err(FieldError::new(
                    format!("{}.ana_group", at("ana_groups", i)),
                    Invalid::Duplicate(v.ana_group.to_string()),
                ));
            }
            ana_groups.push(v);
        }

        // A placement names one of the namespaces a report may hold.
        bounded(&wire.placements, MAX_REPORT_NAMESPACES, "placements")?;
        let mut placements = Vec::with_capacity(wire.placements.len());
        let mut seen_namespaces = HashSet::with_capacity(wire.placements.len());
        for (i, p) in wire.placements.into_iter().enumerate() {
            let p = NamespacePlacement::try_from(p).map_err(|e| e.within(at("placements", i)))?;
            if !seen_namespaces.insert((p.nqn.clone(), p.nsid)) {
                return Err(FieldError::new(
                    at("placements", i),
                    Invalid::Duplicate(format!("{} namespace {}", p.nqn, p.nsid)),
                ));
            }
            placements.push(p);
        }

        let mut slice = MapSlice {
            epoch: Epoch(wire.epoch),
            ana_group,
            availability,
            nqns,
            ana_groups,
            placements,
        };
        slice.canonicalize();
        Ok(slice)
    }
}

impl From<MapSlice> for v1::MapSlice {
    fn from(s: MapSlice) -> Self {
        v1::MapSlice {
            epoch: s.epoch.0,
            ana_group: s.ana_group.get(),
            availability: v1::SliceAvailability::from(s.availability).into(),
            nqns: s.nqns.into_iter().map(String::from).collect(),
            ana_groups: s.ana_groups.into_iter().map(Into::into).collect(),
            placements: s.placements.into_iter().map(Into::into).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(ana_group: u32, access: v1::AnaAccess) -> v1::AnaGroupView {
        v1::AnaGroupView {
            ana_group,
            access: access.into(),
            fence_epoch: 0,
            fence_complete: true,
        }
    }

    fn slice() -> v1::MapSlice {
        v1::MapSlice {
            epoch: 12,
            ana_group: 2,
            availability: v1::SliceAvailability::Available.into(),
            nqns: vec!["nqn.2016-06.io.spdk:cnode1".into()],
            ana_groups: vec![
                view(1, v1::AnaAccess::Inaccessible),
                v1::AnaGroupView {
                    ana_group: 2,
                    access: v1::AnaAccess::Optimized.into(),
                    fence_epoch: 11,
                    fence_complete: false,
                },
            ],
            placements: vec![v1::NamespacePlacement {
                nqn: "nqn.2016-06.io.spdk:cnode1".into(),
                nsid: 7,
                ana_group: 2,
            }],
        }
    }

    fn refusal(wire: v1::MapSlice) -> (String, Invalid) {
        let err = MapSlice::try_from(wire).expect_err("must be refused");
        (err.field, err.reason)
    }

    #[test]
    fn a_valid_slice_converts_field_by_field_and_back() {
        let s = MapSlice::try_from(slice()).expect("valid");
        assert_eq!(s.epoch, Epoch(12));
        assert_eq!(s.ana_group.get(), 2);
        assert_eq!(s.availability, SliceAvailability::Available);
        assert_eq!(s.nqns[0].as_str(), "nqn.2016-06.io.spdk:cnode1");
        let own = s.ana(s.ana_group).expect("own group present");
        assert_eq!(own.access, AnaAccess::Optimized);
        assert_eq!(own.fence_epoch, Epoch(11));
        assert!(!own.fence_complete);
        assert_eq!(s.placement(&s.nqns[0], 7).map(AnaGroupId::get), Some(2));
        assert_eq!(s.placement(&s.nqns[0], 8), None);
        assert_eq!(v1::MapSlice::from(s), slice());
    }

    #[test]
    fn slices_come_out_canonical() {
        let mut wire = slice();
        wire.ana_groups.reverse();
        wire.nqns.insert(0, "nqn.2016-06.io.spdk:cnode9".into());
        let s = MapSlice::try_from(wire).expect("valid");
        let ids: Vec<u32> = s.ana_groups.iter().map(|v| v.ana_group.get()).collect();
        assert_eq!(ids, [1, 2]);
        let nqns: Vec<&str> = s.nqns.iter().map(Nqn::as_str).collect();
        assert_eq!(
            nqns,
            ["nqn.2016-06.io.spdk:cnode1", "nqn.2016-06.io.spdk:cnode9"]
        );
    }

    #[test]
    fn enums_must_be_known_and_specified() {
        let mut wire = slice();
        wire.availability = 0;
        assert_eq!(refusal(wire), ("availability".into(), Invalid::Unspecified));

        let mut wire = slice();
        wire.availability = 4;
        assert_eq!(
            refusal(wire),
            ("availability".into(), Invalid::UnknownEnum(4))
        );

        let mut wire = slice();
        wire.ana_groups[1].access = 0;
        assert_eq!(
            refusal(wire),
            ("ana_groups[1].access".into(), Invalid::Unspecified)
        );

        let mut wire = slice();
        wire.ana_groups[0].access = -3;
        assert_eq!(
            refusal(wire),
            ("ana_groups[0].access".into(), Invalid::UnknownEnum(-3))
        );
    }

    #[test]
    fn ana_group_ids_are_checked_where_they_appear() {
        let mut wire = slice();
        wire.ana_group = 0;
        assert_eq!(refusal(wire), ("ana_group".into(), Invalid::Zero));

        let mut wire = slice();
        wire.ana_groups[0].ana_group = 0;
        assert_eq!(
            refusal(wire),
            ("ana_groups[0].ana_group".into(), Invalid::Zero)
        );

        let mut wire = slice();
        wire.ana_groups.push(view(2, v1::AnaAccess::Inaccessible));
        assert_eq!(
            refusal(wire),
            (
                "ana_groups[2].ana_group".into(),
                Invalid::Duplicate("2".into())
            )
        );
    }

    #[test]
    fn nqns_are_parsed_deduplicated_and_bounded() {
        let mut wire = slice();
        wire.nqns.push("nqn.bad".into());
        assert_eq!(
            refusal(wire),
            ("nqns[1]".into(), Invalid::Nqn("missing yyyy-mm date"))
        );

        let mut wire = slice();
        wire.nqns.push(wire.nqns[0].clone());
        assert_eq!(
            refusal(wire),
            (
                "nqns[1]".into(),
                Invalid::Duplicate("nqn.2016-06.io.spdk:cnode1".into())
            )
        );

        let mut wire = slice();
        wire.nqns = vec![String::new(); MAX_SUBSYSTEMS + 1];
        assert_eq!(
            refusal(wire),
            (
                "nqns".into(),
                Invalid::TooLong {
                    len: MAX_SUBSYSTEMS + 1,
                    max: MAX_SUBSYSTEMS
                }
            )
        );

        let mut wire = slice();
        wire.ana_groups = vec![view(1, v1::AnaAccess::Optimized); 129];
        assert_eq!(
            refusal(wire),
            ("ana_groups".into(), Invalid::TooLong { len: 129, max: 128 })
        );
    }

    #[test]
    fn placements_are_checked_and_never_name_a_namespace_twice() {
        let mut wire = slice();
        wire.placements[0].nsid = 0;
        assert_eq!(refusal(wire), ("placements[0].nsid".into(), Invalid::Zero));

        let mut wire = slice();
        wire.placements[0].ana_group = 0;
        assert_eq!(
            refusal(wire),
            ("placements[0].ana_group".into(), Invalid::Zero)
        );

        let mut wire = slice();
        let mut again = wire.placements[0].clone();
        again.ana_group = 1;
        wire.placements.push(again);
        assert_eq!(
            refusal(wire),
            (
                "placements[1]".into(),
                Invalid::Duplicate("nqn.2016-06.io.spdk:cnode1 namespace 7".into())
            )
        );
    }
}
