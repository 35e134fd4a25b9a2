//! Sets of CPU IDs and their Linux list format (`"0-3,8,10-11"`).
//!
//! Upstream: `k8s.io/utils/cpuset`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A set of logical CPU IDs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct CpuSet(BTreeSet<usize>);

impl CpuSet {
    /// The empty set.
    pub fn new() -> Self {
        CpuSet(BTreeSet::new())
    }

    /// A set of the given IDs.
    pub fn of(ids: impl IntoIterator<Item = usize>) -> Self {
        CpuSet(ids.into_iter().collect())
    }

    /// Parses the Linux list format; the empty string is the empty set.
    pub fn parse(s: &str) -> Result<Self, Error> {
        s.parse()
    }

    /// Number of CPUs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `cpu` is in the set.
    pub fn contains(&self, cpu: usize) -> bool {
        self.0.contains(&cpu)
    }

    /// The IDs in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().copied()
    }

    /// The IDs as a vector, ascending.
    pub fn to_vec(&self) -> Vec<usize> {
        self.0.iter().copied().collect()
    }

    /// `self ∪ other`.
    pub fn union(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.union(&other.0).copied().collect())
    }

    /// `self ∩ other`.
    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.intersection(&other.0).copied().collect())
    }

    /// `self − other`.
    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.difference(&other.0).copied().collect())
    }

    /// Whether every CPU of `self` is in `other`.
    pub fn is_subset(&self, other: &CpuSet) -> bool {
        self.0.is_subset(&other.0)
    }

    /// Adds one CPU.
    pub fn insert(&mut self, cpu: usize) {
        self.0.insert(cpu);
    }

    /// Removes one CPU.
    pub fn remove(&mut self, cpu: usize) {
        self.0.remove(&cpu);
    }
}

impl FromIterator<usize> for CpuSet {
    fn from_iter<T: IntoIterator<Item = usize>>(iter: T) -> Self {
        CpuSet(iter.into_iter().collect())
    }
}

impl FromStr for CpuSet {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason| Error::InvalidCpuSet {
            value: s.to_owned(),
            reason,
        };
        let mut set = BTreeSet::new();
        let t = s.trim();
        if t.is_empty() {
            return Ok(CpuSet(set));
        }
        for part in t.split(',') {
            let part = part.trim();
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a, b),
                None => (part, part),
            };
            let a: usize = a.trim().parse().map_err(|_| bad("not a number"))?;
            let b: usize = b.trim().parse().map_err(|_| bad("not a number"))?;
            if a > b {
                return Err(bad("range end before start"));
            }
            if b >= 1 << 16 {
                return Err(bad("cpu id too large"));
            }
            set.extend(a..=b);
        }
        Ok(CpuSet(set))
    }
}

impl fmt::Display for CpuSet {
    /// The Linux list format: ranges joined with commas.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut it = self.0.iter().copied().peekable();
        while let Some(start) = it.next() {
            let mut end = start;
            while it.peek() == Some(&(end + 1)) {
                end += 1;
                it.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

impl serde::Serialize for CpuSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for CpuSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format() {
        for (text, ids, canon) in [
            ("", vec![], ""),
            ("0", vec![0], "0"),
            ("0-3", vec![0, 1, 2, 3], "0-3"),
            ("0,4-7", vec![0, 4, 5, 6, 7], "0,4-7"),
            ("3,1,2", vec![1, 2, 3], "1-3"),
            ("0-1\n", vec![0, 1], "0-1"),
        ] {
            let s = CpuSet::parse(text).unwrap();
            assert_eq!(s.to_vec(), ids, "{text:?}");
            assert_eq!(s.to_string(), canon);
        }
        for bad in ["a", "1-", "3-1", "1,,2", "99999999"] {
            assert!(CpuSet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn set_operations() {
        let a = CpuSet::of([0, 1, 2, 3]);
        let b = CpuSet::of([2, 3, 4]);
        assert_eq!(a.union(&b).to_string(), "0-4");
        assert_eq!(a.intersection(&b).to_string(), "2-3");
        assert_eq!(a.difference(&b).to_string(), "0-1");
        assert!(CpuSet::of([1]).is_subset(&a));
    }
}
