//! A user's effective permissions, resolved once and checked per row with hash lookups only.
//! Plain Rust: no pgrx types, no SPI.

use std::collections::HashMap;
use std::net::IpAddr;

/// An allowed client network (IPv4 or IPv6 CIDR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// "10.0.0.0/8", "2001:db8::/32", or a single address.
    pub fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?),
            None => {
                let a = text.parse::<IpAddr>().ok()?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Self { addr, prefix })
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        let (net, ip, bits) = match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (u32::from(n) as u128, u32::from(i) as u128, 32),
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        if self.prefix == 0 {
            return true;
        }
        let shift = bits - u32::from(self.prefix);
        (net >> shift) == (ip >> shift)
    }
}

/// One way a permission reaches a user: through a role assignment (direct or via a group,
/// possibly through inherited roles) with its conditions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grant {
    /// None: a global assignment, valid in every scope.
    pub scope: Option<String>,
    /// The scope read as a number / UUID, for the bigint and uuid overloads.
    pub scope_int: Option<i64>,
    pub scope_uuid: Option<[u8; 16]>,
    /// None: from any client address.
    pub networks: Option<Vec<Network>>,
    /// Unix microseconds; None: no expiry.
    pub expires_at_us: Option<i64>,
    /// Authentication assurance level the permission requires; 1 by default.
    pub min_aal: i32,
}

impl Grant {
    pub fn with_scope(scope: Option<String>) -> Self {
        let scope_int = scope.as_deref().and_then(|s| s.parse::<i64>().ok());
        let scope_uuid = scope.as_deref().and_then(crate::ids::parse_uuid);
        Self {
            scope,
            scope_int,
            scope_uuid,
            min_aal: 1,
            ..Self::default()
        }
    }

    fn applies(&self, scope: &Scope<'_>, client: Option<&IpAddr>, now_us: i64, aal: i32) -> bool {
        if self.expires_at_us.is_some_and(|e| e <= now_us) || self.min_aal > aal {
            return false;
        }
        if let Some(networks) = &self.networks {
            match client {
                Some(ip) if networks.iter().any(|n| n.contains(ip)) => {}
                _ => return false,
            }
        }
        match (&self.scope, scope) {
            (None, _) => true,
            (Some(_), Scope::Global) => false,
            (Some(s), Scope::Text(t)) => s == t,
            (Some(_), Scope::Int(i)) => self.scope_int == Some(*i),
            (Some(_), Scope::Uuid(u)) => self.scope_uuid.as_ref() == Some(u),
        }
    }
}

/// The scope a check asks about. `Global` (no scope) is satisfied only by global assignments.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    Global,
    Text(&'a str),
    Int(i64),
    Uuid([u8; 16]),
}

/// Everything a user may do, as loaded from the tables.
#[derive(Debug, Clone, Default)]
pub struct UserPermissions {
    /// Only active users have permissions (locked and disabled users have none).
    pub active: bool,
    by_permission: HashMap<String, Vec<Grant>>,
}

impl UserPermissions {
    pub fn new(active: bool) -> Self {
        Self {
            active,
            by_permission: HashMap::new(),
        }
    }

    pub fn add(&mut self, permission: String, grant: Grant) {
        self.by_permission
            .entry(permission)
            .or_default()
            .push(grant);
    }

    pub fn allows(
        &self,
        permission: &str,
        scope: Scope<'_>,
        client: Option<&IpAddr>,
        now_us: i64,
        aal: i32,
    ) -> bool {
        self.active
            && self.by_permission.get(permission).is_some_and(|grants| {
                grants
                    .iter()
                    .any(|g| g.applies(&scope, client, now_us, aal))
            })
    }

    /// Precompute, for one permission, client and moment, which scopes it holds in: a per-row
    /// check is then a comparison or a binary search, with no hashing.
    pub fn applicable(
        &self,
        permission: &str,
        client: Option<&IpAddr>,
        now_us: i64,
        aal: i32,
    ) -> Applicable {
        let mut out = Applicable::default();
        if !self.active {
            return out;
        }
        for g in self.by_permission.get(permission).into_iter().flatten() {
            // Any scope the grant names: check it applies with that scope itself.
            let probe = match &g.scope {
                None => Scope::Global,
                Some(s) => Scope::Text(s),
            };
            if !g.applies(&probe, client, now_us, aal) {
                continue;
            }
            match &g.scope {
                None => out.global = true,
                Some(s) => {
                    out.text.push(s.clone());
                    out.int.extend(g.scope_int);
                    out.uuid.extend(g.scope_uuid);
                }
            }
        }
        out.text.sort();
        out.text.dedup();
        out.int.sort_unstable();
        out.int.dedup();
        out.uuid.sort_unstable();
        out.uuid.dedup();
        out
    }

    /// Permission names with at least one unexpired grant, sorted; scopes shown as `name@scope`.
    pub fn listing(&self, now_us: i64) -> Vec<String> {
        if !self.active {
            return Vec::new();
        }
        let mut out: Vec<String> = self
            .by_permission
            .iter()
            .flat_map(|(p, grants)| {
                grants
                    .iter()
                    .filter(move |g| g.expires_at_us.is_none_or(|e| e > now_us))
                    .map(move |g| match &g.scope {
                        None => p.clone(),
                        Some(s) => format!("{p}@{s}"),
                    })
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// The scopes in which one permission holds for one user, client and moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applicable {
    pub global: bool,
    text: Vec<String>,
    int: Vec<i64>,
    uuid: Vec<[u8; 16]>,
}

impl Applicable {
    pub fn allows(&self, scope: Scope<'_>) -> bool {
        self.global
            || match scope {
                Scope::Global => false,
                Scope::Text(t) => self.text.binary_search_by(|s| s.as_str().cmp(t)).is_ok(),
                Scope::Int(i) => self.int.binary_search(&i).is_ok(),
                Scope::Uuid(u) => self.uuid.binary_search(&u).is_ok(),
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::parse_uuid;

    const NOW: i64 = 1_800_000_000_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_v4_and_v6() {
        let n = Network::parse("10.1.0.0/16").unwrap();
        assert!(n.contains(&ip("10.1.200.3")));
        assert!(!n.contains(&ip("10.2.0.1")));
        assert!(!n.contains(&ip("2001:db8::1")));
        let v6 = Network::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(&ip("2001:db8:ffff::1")));
        assert!(!v6.contains(&ip("2001:db9::1")));
        // IPv4-mapped IPv6 clients match IPv4 networks.
        assert!(n.contains(&ip("::ffff:10.1.2.3")));
        assert!(Network::parse("0.0.0.0/0")
            .unwrap()
            .contains(&ip("192.0.2.1")));
        assert!(Network::parse("10.0.0.0/33").is_none());
        assert!(Network::parse("nonsense").is_none());
        assert!(Network::parse("192.0.2.7")
            .unwrap()
            .contains(&ip("192.0.2.7")));
    }

    #[test]
    fn scopes_expiry_networks_and_status() {
        let mut p = UserPermissions::new(true);
        p.add("doc.read".into(), Grant::with_scope(Some("42".into())));
        p.add(
            "doc.write".into(),
            Grant {
                networks: Some(vec![Network::parse("10.0.0.0/8").unwrap()]),
                ..Grant::with_scope(None)
            },
        );
        p.add(
            "doc.delete".into(),
            Grant {
                expires_at_us: Some(NOW - 1),
                ..Grant::with_scope(None)
            },
        );
        assert!(p.allows("doc.read", Scope::Text("42"), None, NOW, 1));
        assert!(p.allows("doc.read", Scope::Int(42), None, NOW, 1));
        assert!(!p.allows("doc.read", Scope::Text("43"), None, NOW, 1));
        assert!(
            !p.allows("doc.read", Scope::Global, None, NOW, 1),
            "a scoped grant is not global"
        );
        assert!(p.allows(
            "doc.write",
            Scope::Text("anything"),
            Some(&ip("10.9.9.9")),
            NOW,
            1
        ));
        assert!(!p.allows("doc.write", Scope::Global, Some(&ip("192.0.2.1")), NOW, 1));
        assert!(
            !p.allows("doc.write", Scope::Global, None, NOW, 1),
            "no address, no network grant"
        );
        assert!(
            !p.allows("doc.delete", Scope::Global, None, NOW, 1),
            "expired"
        );
        assert!(!p.allows("doc.unknown", Scope::Global, None, NOW, 1));
        assert_eq!(
            p.listing(NOW),
            vec!["doc.read@42".to_string(), "doc.write".to_string()]
        );
        let locked = UserPermissions {
            active: false,
            ..p.clone()
        };
        assert!(!locked.allows("doc.read", Scope::Text("42"), None, NOW, 1));
        assert!(locked.listing(NOW).is_empty());
    }

    #[test]
    fn assurance_level_gates_grants() {
        let mut p = UserPermissions::new(true);
        p.add(
            "pay.approve".into(),
            Grant {
                min_aal: 2,
                ..Grant::with_scope(None)
            },
        );
        assert!(!p.allows("pay.approve", Scope::Global, None, NOW, 1));
        assert!(p.allows("pay.approve", Scope::Global, None, NOW, 2));
        assert!(p.allows("pay.approve", Scope::Global, None, NOW, 3));
        assert!(!p.applicable("pay.approve", None, NOW, 1).global);
        assert!(p.applicable("pay.approve", None, NOW, 2).global);
    }

    #[test]
    fn applicable_agrees_with_allows() {
        let mut p = UserPermissions::new(true);
        p.add("r".into(), Grant::with_scope(Some("7".into())));
        p.add("r".into(), Grant::with_scope(Some("tenant-a".into())));
        p.add(
            "r".into(),
            Grant {
                expires_at_us: Some(NOW - 1),
                ..Grant::with_scope(Some("8".into()))
            },
        );
        p.add(
            "r".into(),
            Grant {
                networks: Some(vec![Network::parse("10.0.0.0/8").unwrap()]),
                ..Grant::with_scope(Some("9".into()))
            },
        );
        p.add("w".into(), Grant::with_scope(None));
        let clients = [None, Some(ip("10.0.0.1")), Some(ip("192.0.2.1"))];
        let scopes = [
            Scope::Global,
            Scope::Int(7),
            Scope::Int(8),
            Scope::Int(9),
            Scope::Text("7"),
            Scope::Text("tenant-a"),
            Scope::Text("9"),
            Scope::Int(10),
        ];
        for perm in ["r", "w", "x"] {
            for client in &clients {
                let a = p.applicable(perm, client.as_ref(), NOW, 1);
                for scope in scopes {
                    assert_eq!(
                        a.allows(scope),
                        p.allows(perm, scope, client.as_ref(), NOW, 1),
                        "{perm} {client:?} {scope:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn uuid_scopes() {
        let u = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let mut p = UserPermissions::new(true);
        p.add("x".into(), Grant::with_scope(Some(u.into())));
        assert!(p.allows("x", Scope::Uuid(parse_uuid(u).unwrap()), None, NOW, 1));
        assert!(p.allows(
            "x",
            Scope::Uuid(parse_uuid(&u.to_uppercase()).unwrap()),
            None,
            NOW,
            1
        ));
        assert!(parse_uuid("not-a-uuid").is_none());
    }
}
