//! The records of the cluster domain (pure, no IO): what one Service and its EndpointSlices publish
//! ([`service_records`], Kubernetes' DNS specification), and the [`Zone`] answering a query from
//! them, plus pod names (`a-b-c-d.<ns>.pod.<domain>`) that need no state.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The time to live of every answer from the cluster domain (CoreDNS' kubernetes plugin default).
pub const TTL: u32 = 5;

/// `namespace/name` of a Service.
pub type Key = (String, String);

/// A query name as the zone keys it: lower case, no trailing dot.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn fqdn(name: &str) -> Option<Name> {
    Name::from_ascii(format!("{}.", name.trim_end_matches('.'))).ok()
}

/// `d.c.b.a.in-addr.arpa` for `a.b.c.d`.
pub fn reverse_v4(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
}

/// `a-b-c-d` for `a.b.c.d` (IPv6: the colons as dashes), the label Kubernetes gives an address.
pub fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

fn address_record(name: &Name, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name.clone(), TTL, data)
}

/// One record of the zone with the name it answers (normalized).
#[derive(Clone, Debug)]
pub struct Entry {
    /// The owner name, normalized.
    pub name: String,
    /// The record.
    pub record: Record,
}

struct Builder {
    entries: Vec<Entry>,
    seen: BTreeSet<(String, String)>,
}

impl Builder {
    fn add(&mut self, name: &Name, data: RData) {
        let record = Record::from_rdata(name.clone(), TTL, data);
        let key = normalize(&name.to_ascii());
        if self.seen.insert((key.clone(), record.data().to_string() + &record.record_type().to_string())) {
            self.entries.push(Entry { name: key, record });
        }
    }

    fn add_address(&mut self, name: &Name, ip: IpAddr) {
        let record = address_record(name, ip);
        self.add(name, record.data().clone());
    }
}

/// The records of one Service in `domain` (e.g. `cluster.local`), from its EndpointSlices:
/// - ClusterIP (and NodePort, LoadBalancer): `<svc>.<ns>.svc.<domain>` A/AAAA -> the ClusterIPs,
///   PTR of each ClusterIP, SRV `_<port>._<proto>.<svc>...` per named port -> the service name;
/// - headless (`clusterIP: None`): A/AAAA -> the ready endpoint addresses (all with
///   `publishNotReadyAddresses`), `<hostname>.<svc>...` for endpoints with a hostname (else
///   `<a-b-c-d>.<svc>...`) and their PTRs, SRV per named port -> each endpoint's name;
/// - ExternalName: CNAME -> `externalName`.
pub fn service_records(domain: &str, service: &Service, slices: &[&EndpointSlice]) -> Vec<Entry> {
    let mut b = Builder { entries: Vec::new(), seen: BTreeSet::new() };
    let (Some(ns), Some(svc_name), Some(spec)) =
        (service.metadata.namespace.as_deref(), service.metadata.name.as_deref(), service.spec.as_ref())
    else {
        return b.entries;
    };
    let Some(name) = fqdn(&format!("{svc_name}.{ns}.svc.{domain}")) else { return b.entries };
    if spec.type_.as_deref() == Some("ExternalName") {
        if let Some(target) = spec.external_name.as_deref().and_then(fqdn) {
            b.add(&name, RData::CNAME(CNAME(target)));
        }
        return b.entries;
    }
    let cluster_ips: Vec<&str> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
        _ => spec.cluster_ip.as_deref().into_iter().collect(),
    };
    let headless = cluster_ips.contains(&"None");
    if !headless {
        let ips: Vec<IpAddr> = cluster_ips.iter().filter_map(|ip| ip.parse().ok()).collect();
        if ips.is_empty() {
            return b.entries;
        }
        for ip in &ips {
            b.add_address(&name, *ip);
            if let IpAddr::V4(v4) = ip {
                if let Some(reverse) = fqdn(&reverse_v4(*v4)) {
                    b.add(&reverse, RData::PTR(PTR(name.clone())));
                }
            }
        }
        for port in spec.ports.iter().flatten() {
            let (Some(port_name), Ok(number)) = (port.name.as_deref(), u16::try_from(port.port)) else { continue };
            if port_name.is_empty() {
                continue;
            }
            let proto = port.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
            if let Some(srv) = fqdn(&format!("_{port_name}._{proto}.{svc_name}.{ns}.svc.{domain}")) {
                b.add(&srv, RData::SRV(SRV::new(0, 100, number, name.clone())));
            }
        }
        return b.entries;
    }
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    for slice in slices {
        for endpoint in &slice.endpoints {
            let ready = endpoint.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready && !publish_not_ready {
                continue;
            }
            for address in &endpoint.addresses {
                let Ok(ip) = address.parse::<IpAddr>() else { continue };
                let label = endpoint.hostname.clone().unwrap_or_else(|| dashed(ip));
                let Some(own) = fqdn(&format!("{label}.{svc_name}.{ns}.svc.{domain}")) else { continue };
                b.add_address(&name, ip);
                b.add_address(&own, ip);
                if let (Some(_), IpAddr::V4(v4)) = (&endpoint.hostname, ip) {
                    if let Some(reverse) = fqdn(&reverse_v4(v4)) {
                        b.add(&reverse, RData::PTR(PTR(own.clone())));
                    }
                }
                for port in slice.ports.iter().flatten() {
                    let (Some(port_name), Some(number)) =
                        (port.name.as_deref(), port.port.and_then(|p| u16::try_from(p).ok()))
                    else {
                        continue;
                    };
                    if port_name.is_empty() {
                        continue;
                    }
                    let proto = port.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                    if let Some(srv) = fqdn(&format!("_{port_name}._{proto}.{svc_name}.{ns}.svc.{domain}")) {
                        b.add(&srv, RData::SRV(SRV::new(0, 100, number, own.clone())));
                    }
                }
            }
        }
    }
    b.entries
}

/// What the zone says about a name.
#[derive(Debug)]
pub enum Answer {
    /// The name exists: its records of the asked type (empty: NODATA), a CNAME and what it leads to
    /// inside the zone for other types.
    Found(Vec<Record>),
    /// A name in the cluster domain that does not exist.
    NxDomain,
    /// Not in the cluster domain (nor a reverse name the zone holds): forwarded upstream.
    NotOurs,
}

/// The cluster domain's records, replaced per Service.
pub struct Zone {
    domain: String,
    soa: Record,
    names: HashMap<String, Vec<(Arc<Key>, Record)>>,
    owned: HashMap<Key, (Arc<Key>, Vec<String>)>,
}

impl Zone {
    /// An empty zone for `domain` (e.g. `cluster.local`).
    pub fn new(domain: &str) -> Self {
        let domain = normalize(domain);
        let apex = fqdn(&domain).unwrap_or_else(Name::root);
        let mname = fqdn(&format!("ns.dns.{domain}")).unwrap_or_else(Name::root);
        let rname = fqdn(&format!("hostmaster.{domain}")).unwrap_or_else(Name::root);
        let soa = Record::from_rdata(apex, TTL, RData::SOA(SOA::new(mname, rname, 1, 7200, 1800, 86400, TTL)));
        Zone { domain, soa, names: HashMap::new(), owned: HashMap::new() }
    }

    /// The cluster domain, normalized.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The SOA record of the cluster domain (in the authority section of negative answers).
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// How many names the zone holds.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the zone holds no name.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Replaces the records of Service `key` (empty: removes them).
    pub fn set_service(&mut self, key: &Key, entries: Vec<Entry>) {
        if let Some((owner, names)) = self.owned.remove(key) {
            for name in names {
                if let Some(records) = self.names.get_mut(&name) {
                    records.retain(|(k, _)| !Arc::ptr_eq(k, &owner));
                    if records.is_empty() {
                        self.names.remove(&name);
                    }
                }
            }
        }
        if entries.is_empty() {
            return;
        }
        let owner = Arc::new(key.clone());
        let mut names = Vec::with_capacity(entries.len());
        for entry in entries {
            names.push(entry.name.clone());
            self.names.entry(entry.name).or_default().push((Arc::clone(&owner), entry.record));
        }
        names.sort_unstable();
        names.dedup();
        self.owned.insert(key.clone(), (owner, names));
    }

    fn in_domain(&self, name: &str) -> bool {
        name == self.domain || name.strip_suffix(self.domain.as_str()).is_some_and(|rest| rest.ends_with('.'))
    }

    /// The answer to `qtype` for `name` (normalized).
    pub fn answer(&self, name: &str, qname: &Name, qtype: RecordType) -> Answer {
        if let Some(records) = self.names.get(name) {
            let mut out = Vec::new();
            for (_, record) in records {
                let t = record.record_type();
                if t == qtype || qtype == RecordType::ANY {
                    out.push(record.clone());
                } else if t == RecordType::CNAME {
                    out.push(record.clone());
                    // Follow the alias inside the zone (one step; ExternalNames point outside).
                    if let RData::CNAME(CNAME(target)) = record.data() {
                        if let Answer::Found(more) = self.answer(&normalize(&target.to_ascii()), target, qtype) {
                            out.extend(more.into_iter().filter(|r| r.record_type() != RecordType::CNAME));
                        }
                    }
                }
            }
            return Answer::Found(out);
        }
        if !self.in_domain(name) {
            return Answer::NotOurs;
        }
        if let Some(ip) = self.pod_address(name) {
            let records = match (qtype, ip) {
                (RecordType::A | RecordType::ANY, IpAddr::V4(_)) => vec![address_record(qname, ip)],
                _ => Vec::new(),
            };
            return Answer::Found(records);
        }
        if name == self.domain || self.is_structural(name) {
            return Answer::Found(Vec::new());
        }
        Answer::NxDomain
    }

    /// `a-b-c-d.<ns>.pod.<domain>` -> `a.b.c.d`.
    fn pod_address(&self, name: &str) -> Option<IpAddr> {
        let rest = name.strip_suffix(self.domain.as_str())?.strip_suffix(".pod.")?;
        let (label, ns) = rest.split_once('.')?;
        if ns.is_empty() || ns.contains('.') {
            return None;
        }
        let ip: Ipv4Addr = label.replace('-', ".").parse().ok()?;
        Some(IpAddr::V4(ip))
    }

    /// `svc.<domain>`, `pod.<domain>`: names that exist with no records of their own.
    fn is_structural(&self, name: &str) -> bool {
        name.strip_suffix(self.domain.as_str())
            .and_then(|rest| rest.strip_suffix('.'))
            .is_some_and(|label| label == "svc" || label == "pod")
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    const D: &str = "cluster.local";

    fn service(name: &str, spec: ServiceSpec) -> Service {
        Service {
            metadata: ObjectMeta { name: Some(name.into()), namespace: Some("default".into()), ..Default::default() },
            spec: Some(spec),
            ..Default::default()
        }
    }

    fn port(name: &str, number: i32, proto: &str) -> ServicePort {
        ServicePort { name: Some(name.into()), port: number, protocol: Some(proto.into()), ..Default::default() }
    }

    fn endpoint(ip: &str, hostname: Option<&str>, ready: bool) -> Endpoint {
        Endpoint {
            addresses: vec![ip.into()],
            hostname: hostname.map(Into::into),
            conditions: Some(EndpointConditions { ready: Some(ready), ..Default::default() }),
            ..Default::default()
        }
    }

    fn slice(endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            endpoints,
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            metadata: ObjectMeta::default(),
        }
    }

    fn zone_with(svc: &Service, slices: &[&EndpointSlice]) -> Zone {
        let mut zone = Zone::new(D);
        let key = (String::from("default"), svc.metadata.name.clone().unwrap_or_default());
        zone.set_service(&key, service_records(D, svc, slices));
        zone
    }

    fn ask(zone: &Zone, name: &str, qtype: RecordType) -> Answer {
        let qname = fqdn(name).expect("name");
        zone.answer(&normalize(name), &qname, qtype)
    }

    fn found(answer: Answer) -> Vec<String> {
        match answer {
            Answer::Found(records) => {
                let mut out: Vec<String> = records.iter().map(|r| r.data().to_string()).collect();
                out.sort();
                out
            }
            other => panic!("expected records, got {other:?}"),
        }
    }

    #[test]
    fn cluster_ip_service_has_a_srv_and_ptr() {
        let svc = service(
            "web",
            ServiceSpec {
                cluster_ip: Some("10.43.0.20".into()),
                cluster_ips: Some(vec!["10.43.0.20".into()]),
                ports: Some(vec![port("http", 80, "TCP"), port("dns", 53, "UDP")]),
                ..Default::default()
            },
        );
        let zone = zone_with(&svc, &[]);
        assert_eq!(found(ask(&zone, "web.default.svc.cluster.local.", RecordType::A)), ["10.43.0.20"]);
        assert_eq!(found(ask(&zone, "WEB.Default.svc.cluster.local", RecordType::A)), ["10.43.0.20"]);
        assert!(found(ask(&zone, "web.default.svc.cluster.local", RecordType::AAAA)).is_empty(), "NODATA");
        assert_eq!(
            found(ask(&zone, "_http._tcp.web.default.svc.cluster.local", RecordType::SRV)),
            ["0 100 80 web.default.svc.cluster.local."]
        );
        assert_eq!(
            found(ask(&zone, "_dns._udp.web.default.svc.cluster.local", RecordType::SRV)),
            ["0 100 53 web.default.svc.cluster.local."]
        );
        assert_eq!(found(ask(&zone, "20.0.43.10.in-addr.arpa", RecordType::PTR)), ["web.default.svc.cluster.local."]);
        assert!(matches!(ask(&zone, "nope.default.svc.cluster.local", RecordType::A), Answer::NxDomain));
        assert!(matches!(ask(&zone, "example.com", RecordType::A), Answer::NotOurs));
    }

    #[test]
    fn headless_service_answers_ready_endpoints_and_hostnames() {
        let svc = service(
            "db",
            ServiceSpec {
                cluster_ip: Some("None".into()),
                cluster_ips: Some(vec!["None".into()]),
                ..Default::default()
            },
        );
        let s = slice(vec![
            endpoint("10.88.0.5", Some("db-0"), true),
            endpoint("10.88.0.6", None, true),
            endpoint("10.88.0.7", Some("db-2"), false),
        ]);
        let zone = zone_with(&svc, &[&s]);
        assert_eq!(found(ask(&zone, "db.default.svc.cluster.local", RecordType::A)), ["10.88.0.5", "10.88.0.6"]);
        assert_eq!(found(ask(&zone, "db-0.db.default.svc.cluster.local", RecordType::A)), ["10.88.0.5"]);
        assert_eq!(found(ask(&zone, "10-88-0-6.db.default.svc.cluster.local", RecordType::A)), ["10.88.0.6"]);
        assert!(matches!(ask(&zone, "db-2.db.default.svc.cluster.local", RecordType::A), Answer::NxDomain));
        assert_eq!(
            found(ask(&zone, "_http._tcp.db.default.svc.cluster.local", RecordType::SRV)),
            ["0 100 8080 10-88-0-6.db.default.svc.cluster.local.", "0 100 8080 db-0.db.default.svc.cluster.local."]
        );
        assert_eq!(
            found(ask(&zone, "5.0.88.10.in-addr.arpa", RecordType::PTR)),
            ["db-0.db.default.svc.cluster.local."]
        );

        // publishNotReadyAddresses publishes the unready one too.
        let mut svc = svc;
        if let Some(spec) = svc.spec.as_mut() {
            spec.publish_not_ready_addresses = Some(true);
        }
        let zone = zone_with(&svc, &[&s]);
        assert_eq!(found(ask(&zone, "db-2.db.default.svc.cluster.local", RecordType::A)), ["10.88.0.7"]);
    }

    #[test]
    fn external_name_is_a_cname_for_every_type() {
        let svc = service(
            "ext",
            ServiceSpec {
                type_: Some("ExternalName".into()),
                external_name: Some("example.com".into()),
                ..Default::default()
            },
        );
        let zone = zone_with(&svc, &[]);
        assert_eq!(found(ask(&zone, "ext.default.svc.cluster.local", RecordType::A)), ["example.com."]);
        assert_eq!(found(ask(&zone, "ext.default.svc.cluster.local", RecordType::CNAME)), ["example.com."]);
    }

    #[test]
    fn pod_names_and_structure() {
        let zone = Zone::new(D);
        assert_eq!(found(ask(&zone, "10-88-0-9.default.pod.cluster.local", RecordType::A)), ["10.88.0.9"]);
        assert!(matches!(ask(&zone, "10-88-0-999.default.pod.cluster.local", RecordType::A), Answer::NxDomain));
        assert!(found(ask(&zone, "svc.cluster.local", RecordType::A)).is_empty());
        assert!(found(ask(&zone, "cluster.local", RecordType::A)).is_empty());
        assert!(matches!(ask(&zone, "x.cluster.local", RecordType::A), Answer::NxDomain));
        assert!(matches!(ask(&zone, "notcluster.local", RecordType::A), Answer::NotOurs));
    }

    #[test]
    fn replacing_and_removing_a_service() {
        let mut svc = service("web", ServiceSpec { cluster_ip: Some("10.43.0.20".into()), ..Default::default() });
        let mut zone = zone_with(&svc, &[]);
        let key = (String::from("default"), String::from("web"));
        if let Some(spec) = svc.spec.as_mut() {
            spec.cluster_ip = Some("10.43.0.21".into());
        }
        zone.set_service(&key, service_records(D, &svc, &[]));
        assert_eq!(found(ask(&zone, "web.default.svc.cluster.local", RecordType::A)), ["10.43.0.21"]);
        assert!(matches!(ask(&zone, "20.0.43.10.in-addr.arpa", RecordType::PTR), Answer::NotOurs));
        zone.set_service(&key, Vec::new());
        assert!(matches!(ask(&zone, "web.default.svc.cluster.local", RecordType::A), Answer::NxDomain));
        assert!(zone.is_empty());
    }
}
