//! Where an instance may run: Marathon's constraints over agent attributes, and whether an
//! agent's offer fits the instance's resources. Pure functions; the scheduler in
//! [`crate::core`] calls them.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use regex::Regex;

/// One Marathon constraint, `[field, operator, value?]`.
#[derive(Debug, Clone)]
pub enum Constraint {
    /// `UNIQUE`: at most one instance per value of `field`.
    Unique(String),
    /// `CLUSTER value`: only where `field` equals `value`.
    Cluster(String, String),
    /// `GROUP_BY [n]`: spread evenly over the values of `field`.
    GroupBy(String),
    /// `LIKE regex`: only where `field` matches.
    Like(String, Regex),
    /// `UNLIKE regex`: only where `field` does not match.
    Unlike(String, Regex),
    /// `MAX_PER n`: at most `n` instances per value of `field`.
    MaxPer(String, usize),
}

impl Constraint {
    /// Parses `["hostname", "UNIQUE"]` and friends; the error names the operator and value.
    pub fn parse(c: &[String]) -> Result<Self, String> {
        let field = c.first().ok_or("a constraint needs a field")?.clone();
        let op = c
            .get(1)
            .ok_or_else(|| format!("constraint on {field:?} needs an operator"))?;
        let value = c.get(2);
        let need = |what: &str| {
            value
                .cloned()
                .ok_or_else(|| format!("{op} on {field:?} needs {what}"))
        };
        let regex = |s: String| {
            Regex::new(&format!("^(?:{s})$"))
                .map_err(|e| format!("{op} value {s:?} is not a regex: {e}"))
        };
        Ok(match op.as_str() {
            "UNIQUE" => Self::Unique(field),
            "CLUSTER" => Self::Cluster(field.clone(), need("a value")?),
            "GROUP_BY" => Self::GroupBy(field),
            "LIKE" => Self::Like(field.clone(), regex(need("a regex")?)?),
            "UNLIKE" => Self::Unlike(field.clone(), regex(need("a regex")?)?),
            "MAX_PER" => {
                let n = need("a number")?;
                Self::MaxPer(
                    field.clone(),
                    n.parse()
                        .map_err(|_| format!("MAX_PER value {n:?} is not a number"))?,
                )
            }
            other => {
                return Err(format!(
                    "operator {other:?} is not one of UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE, MAX_PER"
                ));
            }
        })
    }

    /// Whether the constraint decides by the agent alone and the instances on agents of the
    /// same host name (not GROUP_BY, no count over an attribute shared by many hosts): a
    /// pass may then look at a few agents without counting the whole fleet.
    pub fn per_host(&self) -> bool {
        match self {
            Self::Cluster(..) | Self::Like(..) | Self::Unlike(..) => true,
            Self::Unique(f) | Self::MaxPer(f, _) => f == "hostname" || f == "@hostname",
            Self::GroupBy(_) => false,
        }
    }

    fn field(&self) -> &str {
        match self {
            Self::Unique(f)
            | Self::Cluster(f, _)
            | Self::GroupBy(f)
            | Self::Like(f, _)
            | Self::Unlike(f, _)
            | Self::MaxPer(f, _) => f,
        }
    }
}

/// What placement knows of an agent.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// Agent id.
    pub agent_id: &'a str,
    /// Host name (the `hostname` field of constraints).
    pub hostname: &'a str,
    /// Attributes.
    pub attributes: &'a BTreeMap<String, String>,
}

impl<'a> Candidate<'a> {
    /// The value of a constraint field on this agent (`hostname` or an attribute).
    pub fn value(&self, field: &str) -> Option<&'a str> {
        match field {
            "hostname" | "@hostname" => Some(self.hostname),
            _ => self.attributes.get(field).map(String::as_str),
        }
    }
}

/// How many of an app's instances run per value of each constrained field, and which values
/// exist in the fleet (for GROUP_BY). Built once per scheduling pass, updated per placement,
/// so placing `n` instances on `m` agents costs `n * m`, not more.
#[derive(Debug, Default)]
pub struct PeerCounts<'a> {
    counts: FxHashMap<&'a str, FxHashMap<&'a str, usize>>,
    values: FxHashMap<&'a str, Vec<&'a str>>,
}

impl<'a> PeerCounts<'a> {
    /// Counts for the fields of `constraints`, from the agents the app's instances run on
    /// (`peers`) and every agent of the fleet (`all`).
    pub fn new(
        constraints: &'a [Constraint],
        peers: &[Candidate<'a>],
        all: &[Candidate<'a>],
    ) -> Self {
        let mut pc = Self::default();
        for k in constraints {
            let f = k.field();
            // Every value of the field matters only to GROUP_BY (the lowest count over all).
            if matches!(k, Constraint::GroupBy(_)) {
                let mut values: Vec<&str> = all.iter().filter_map(|a| a.value(f)).collect();
                values.sort_unstable();
                values.dedup();
                pc.values.insert(f, values);
            }
            pc.counts.entry(f).or_default();
        }
        for p in peers {
            pc.add(p);
        }
        pc
    }

    /// Counts one more instance on `c`.
    pub fn add(&mut self, c: &Candidate<'a>) {
        for (f, m) in self.counts.iter_mut() {
            if let Some(v) = c.value(f) {
                *m.entry(v).or_default() += 1;
            }
        }
    }

    fn count(&self, field: &str, value: &str) -> usize {
        self.counts
            .get(field)
            .and_then(|m| m.get(value))
            .copied()
            .unwrap_or(0)
    }
}

/// Whether `c` may take one more instance, given where the app's instances run now.
pub fn allowed(constraints: &[Constraint], c: &Candidate, peers: &PeerCounts) -> bool {
    constraints.iter().all(|k| {
        let f = k.field();
        let here = c.value(f);
        let same = || here.map(|h| peers.count(f, h)).unwrap_or(0);
        match k {
            Constraint::Unique(_) => here.is_some() && same() == 0,
            Constraint::Cluster(_, v) => here == Some(v.as_str()),
            Constraint::Like(_, re) => here.is_some_and(|h| re.is_match(h)),
            Constraint::Unlike(_, re) => here.is_none_or(|h| !re.is_match(h)),
            Constraint::MaxPer(_, n) => here.is_some() && same() < *n,
            Constraint::GroupBy(_) => {
                // Only where the count of this value is the lowest of all values.
                let Some(here) = here else { return false };
                let min = peers
                    .values
                    .get(f)
                    .into_iter()
                    .flatten()
                    .map(|v| peers.count(f, v))
                    .min()
                    .unwrap_or(0);
                peers.count(f, here) == min
            }
        }
    })
}

/// Resources one instance needs and an agent has left.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Amount {
    /// CPUs.
    pub cpus: f64,
    /// MiB of memory.
    pub mem: f64,
    /// MiB of disk.
    pub disk: f64,
}

impl std::ops::Add for Amount {
    type Output = Amount;
    fn add(self, o: Amount) -> Amount {
        Amount {
            cpus: self.cpus + o.cpus,
            mem: self.mem + o.mem,
            disk: self.disk + o.disk,
        }
    }
}

impl std::ops::Sub for Amount {
    type Output = Amount;
    fn sub(self, o: Amount) -> Amount {
        Amount {
            cpus: self.cpus - o.cpus,
            mem: self.mem - o.mem,
            disk: self.disk - o.disk,
        }
    }
}

impl std::ops::AddAssign for Amount {
    fn add_assign(&mut self, o: Amount) {
        *self = *self + o;
    }
}

impl std::ops::SubAssign for Amount {
    fn sub_assign(&mut self, o: Amount) {
        *self = *self - o;
    }
}

impl Amount {
    /// Whether `need` fits into `self`.
    pub fn fits(&self, need: &Amount) -> bool {
        // A little slack for float sums such as 0.1 + 0.2.
        const EPS: f64 = 1e-9;
        need.cpus <= self.cpus + EPS && need.mem <= self.mem + EPS && need.disk <= self.disk + EPS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(c: &[&str]) -> Constraint {
        Constraint::parse(&c.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn unique_hostname_refuses_a_second_instance_on_one_host() {
        let a = BTreeMap::new();
        let h1 = Candidate {
            agent_id: "a1",
            hostname: "h1",
            attributes: &a,
        };
        let h2 = Candidate {
            agent_id: "a2",
            hostname: "h2",
            attributes: &a,
        };
        let k = [parse(&["hostname", "UNIQUE"])];
        let all = [h1.clone(), h2.clone()];
        assert!(allowed(&k, &h1, &PeerCounts::new(&k, &[], &all)));
        assert!(!allowed(
            &k,
            &h1,
            &PeerCounts::new(&k, std::slice::from_ref(&h1), &all)
        ));
        assert!(allowed(
            &k,
            &h2,
            &PeerCounts::new(&k, std::slice::from_ref(&h1), &all)
        ));
    }

    #[test]
    fn cluster_like_unlike_and_max_per_read_attributes() {
        let north = attrs(&[("zone", "north"), ("rack", "r1")]);
        let south = attrs(&[("zone", "south"), ("rack", "r2")]);
        let n = Candidate {
            agent_id: "n",
            hostname: "n",
            attributes: &north,
        };
        let s = Candidate {
            agent_id: "s",
            hostname: "s",
            attributes: &south,
        };
        let all = [n.clone(), s.clone()];
        let cluster = [parse(&["zone", "CLUSTER", "north"])];
        assert!(
            allowed(&cluster, &n, &PeerCounts::new(&cluster, &[], &all))
                && !allowed(&cluster, &s, &PeerCounts::new(&cluster, &[], &all))
        );
        let like = [parse(&["rack", "LIKE", "r[12]"])];
        assert!(
            allowed(&like, &n, &PeerCounts::new(&like, &[], &all))
                && allowed(&like, &s, &PeerCounts::new(&like, &[], &all))
        );
        let unlike = [parse(&["rack", "UNLIKE", "r1"])];
        assert!(
            !allowed(&unlike, &n, &PeerCounts::new(&unlike, &[], &all))
                && allowed(&unlike, &s, &PeerCounts::new(&unlike, &[], &all))
        );
        let max = [parse(&["zone", "MAX_PER", "2"])];
        assert!(allowed(
            &max,
            &n,
            &PeerCounts::new(&max, std::slice::from_ref(&n), &all)
        ));
        assert!(!allowed(
            &max,
            &n,
            &PeerCounts::new(&max, &[n.clone(), n.clone()], &all)
        ));
    }

    #[test]
    fn group_by_spreads_over_values() {
        let north = attrs(&[("zone", "north")]);
        let south = attrs(&[("zone", "south")]);
        let n = Candidate {
            agent_id: "n",
            hostname: "n",
            attributes: &north,
        };
        let s = Candidate {
            agent_id: "s",
            hostname: "s",
            attributes: &south,
        };
        let all = [n.clone(), s.clone()];
        let k = [parse(&["zone", "GROUP_BY"])];
        assert!(!allowed(
            &k,
            &n,
            &PeerCounts::new(&k, std::slice::from_ref(&n), &all)
        ));
        assert!(allowed(
            &k,
            &s,
            &PeerCounts::new(&k, std::slice::from_ref(&n), &all)
        ));
    }

    #[test]
    fn bad_constraints_name_the_operator_and_value() {
        let e = Constraint::parse(&["zone".into(), "NEAR".into()]).unwrap_err();
        assert!(e.contains("NEAR"), "{e}");
        let e = Constraint::parse(&["zone".into(), "MAX_PER".into(), "x".into()]).unwrap_err();
        assert!(e.contains("\"x\""), "{e}");
    }

    #[test]
    fn fits_compares_every_resource() {
        let have = Amount {
            cpus: 1.0,
            mem: 128.0,
            disk: 0.0,
        };
        assert!(have.fits(&Amount {
            cpus: 0.3,
            mem: 64.0,
            disk: 0.0
        }));
        assert!(!have.fits(&Amount {
            cpus: 0.3,
            mem: 256.0,
            disk: 0.0
        }));
    }
}
