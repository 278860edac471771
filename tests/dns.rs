//! dns:: actions against the moto server standing in for Route53, checked with the AWS SDK.

use runbook_stack::moto::{find_server, Moto, RECORD};
use runbook_stack::REGIONS;

use crate::support::Test;

fn moto() -> (tempfile::TempDir, Moto) {
    let dir = tempfile::tempdir().unwrap();
    let server = find_server(Some(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/.venv/bin/moto_server"
    ))));
    let moto = Moto::start(&dir.path().join("moto"), &server, &REGIONS, &[70, 30, 0])
        .expect("moto starts (scripts/setup installs it)");
    (dir, moto)
}

fn test(m: &Moto, script: &str) -> Test {
    Test::new()
        .inventory(&format!(
            "[dns]\nzone = \"example.com\"\nrecord = \"{RECORD}\"\nendpoint_url = \"{}\"\n",
            m.endpoint()
        ))
        .script(script)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
}

const SHIFT: &str = r#"
    let d = inventory.dns;
    let r = dns::set_weights(#{ zone: d.zone, name: d.record, weights: #{ "us-east-1": 0, "eu-west-1": 100 }, endpoint_url: d.endpoint_url });
    let w = dns::wait_change(#{ change_id: r.change_id, interval: "100ms", endpoint_url: d.endpoint_url });
    log(`status=${r.status} before=${r.before} after=${r.after} sync=${w.status}`);
"#;

#[test]
fn set_weights_moves_traffic_keeps_targets_and_twice_is_once() {
    let (_d, m) = moto();
    let before = m.snapshot();
    test(&m, SHIFT)
        .run(&[])
        .code(0)
        .stdout(r#"before=#{"ap-southeast-1": 0, "eu-west-1": 30, "us-east-1": 70}"#)
        .stdout(r#"after=#{"ap-southeast-1": 0, "eu-west-1": 100, "us-east-1": 0}"#)
        .stdout("sync=INSYNC")
        .check();
    assert_eq!(
        m.weights(),
        [
            ("ap-southeast-1".to_string(), 0),
            ("eu-west-1".to_string(), 100),
            ("us-east-1".to_string(), 0)
        ]
    );
    // Only the weights changed: targets, TTLs and health checks are as they were.
    let after = m.snapshot();
    let strip = |s: &str| {
        s.replace("weight: Some(70)", "W")
            .replace("weight: Some(30)", "W")
            .replace("weight: Some(100)", "W")
            .replace("weight: Some(0)", "W")
    };
    assert_eq!(strip(&before), strip(&after));
    test(&m, SHIFT)
        .run(&[])
        .code(0)
        .stdout("status=UNCHANGED")
        .stdout("sync=UNCHANGED")
        .check();
}

#[test]
fn records_get_upsert_delete_and_health_checks() {
    let (_d, m) = moto();
    let script = r#"
        let d = inventory.dns;
        let all = dns::records(#{ zone: d.zone, endpoint_url: d.endpoint_url });
        let mine = dns::get(#{ zone: d.zone, name: d.record, endpoint_url: d.endpoint_url });
        log(`zone has ${all.records.len()} records; ${d.record} has ${mine.records.len()} weighted: ${mine.weights}`);
        let u = dns::upsert(#{ zone: d.zone, endpoint_url: d.endpoint_url,
            records: [#{ name: "status.example.com", type: "CNAME", ttl: 60, values: ["eu-west-1-lb.example.com"] }] });
        let x = dns::delete(#{ zone: d.zone, name: "old.example.com", type: "TXT", endpoint_url: d.endpoint_url });
        let h = dns::health_checks(#{ endpoint_url: d.endpoint_url });
        log(`upsert=${u.status} delete=${x.status} health_checks=${h.health_checks.len()} ${h.health_checks[0].type}`);
    "#;
    test(&m, script)
        .run(&[])
        .code(0)
        .stdout("zone has 5 records; orchestrator.example.com has 3 weighted")
        .stdout("upsert=INSYNC delete=UNCHANGED health_checks=3 HTTP")
        .check();
    assert!(m.snapshot().contains("eu-west-1-lb.example.com"));
    test(&m, script)
        .run(&[])
        .code(0)
        .stdout("upsert=UNCHANGED")
        .check();
    let del = r#"
        let d = inventory.dns;
        let x = dns::delete(#{ zone: d.zone, name: "status.example.com", type: "CNAME", endpoint_url: d.endpoint_url });
        log(`delete=${x.status}`);
    "#;
    test(&m, del)
        .run(&[])
        .code(0)
        .stdout("delete=INSYNC")
        .check();
    assert!(!m.snapshot().contains("status.example.com"));
    test(&m, del)
        .run(&[])
        .code(0)
        .stdout("delete=UNCHANGED")
        .check();
}

#[test]
fn dry_run_changes_no_record_and_shows_the_weights_now() {
    let (_d, m) = moto();
    let before = m.snapshot();
    test(&m, SHIFT)
        .run(&["--dry-run"])
        .code(0)
        .stdout("~ dns::set_weights: set weights of orchestrator.example.com A: eu-west-1 100 / us-east-1 0; now ap-southeast-1 0 / eu-west-1 30 / us-east-1 70")
        .check();
    assert_eq!(m.snapshot(), before);
}

#[test]
fn missing_zones_unknown_records_and_bad_weights_are_named() {
    let (_d, m) = moto();
    let cases = [
        (
            r#"dns::records(#{ zone: "nope.com", endpoint_url: inventory.dns.endpoint_url });"#,
            "no hosted zone named nope.com.",
        ),
        (
            r#"dns::set_weights(#{ zone: "example.com", name: inventory.dns.record, weights: #{ "eu-west-9": 10 }, endpoint_url: inventory.dns.endpoint_url });"#,
            "has no weighted record 'eu-west-9'; it has ap-southeast-1, eu-west-1, us-east-1",
        ),
        (
            r#"dns::set_weights(#{ zone: "example.com", name: inventory.dns.record, weights: #{ "eu-west-1": 300 }, endpoint_url: inventory.dns.endpoint_url });"#,
            "weight 300 for eu-west-1 is outside 0–255",
        ),
        (
            r#"dns::set_weights(#{ zone: "example.com", name: inventory.dns.record, weights: #{ "us-east-1": 0, "eu-west-1": 0 }, endpoint_url: inventory.dns.endpoint_url });"#,
            "every weight of orchestrator.example.com would be 0",
        ),
        (
            r#"dns::records(#{ zone: "example.com", endpoint_url: "http://127.0.0.1:9", retries: 0 });"#,
            "(http://127.0.0.1:9)",
        ),
    ];
    for (script, message) in cases {
        let t = test(&m, script).run(&[]).code(1).stderr(message);
        t.check();
        assert!(t.journal(&t.only_run()).contains("action_failed"));
    }
    assert_eq!(m.weights()[1], ("eu-west-1".to_string(), 30));
}

/// Runs Python with boto3 (moto's own dependency, in .venv) against moto's CloudFront.
pub(crate) fn boto3(m: &Moto, code: &str) -> String {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    let script = format!(
        "import boto3, json\nc = boto3.client('cloudfront', endpoint_url='{}', region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')\n{code}",
        m.endpoint()
    );
    let out = std::process::Command::new(python)
        .args(["-c", &script])
        .output()
        .expect("the venv's python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A CloudFront distribution created in moto; its id.
pub(crate) fn distribution(m: &Moto) -> String {
    boto3(
        m,
        r#"d = c.create_distribution(DistributionConfig={
    'CallerReference': 'runbook-test', 'Comment': 'test', 'Enabled': True,
    'Origins': {'Quantity': 1, 'Items': [{'Id': 'o1', 'DomainName': 'origin.example.com',
        'CustomOriginConfig': {'HTTPPort': 80, 'HTTPSPort': 443, 'OriginProtocolPolicy': 'https-only'}}]},
    'DefaultCacheBehavior': {'TargetOriginId': 'o1', 'ViewerProtocolPolicy': 'allow-all', 'MinTTL': 0,
        'ForwardedValues': {'QueryString': False, 'Cookies': {'Forward': 'none'}},
        'TrustedSigners': {'Enabled': False, 'Quantity': 0}}})
print(d['Distribution']['Id'])"#,
    )
}

/// The paths of every invalidation of a distribution, sorted.
pub(crate) fn invalidated_paths(m: &Moto, id: &str) -> String {
    boto3(
        m,
        &format!(
            "items = c.list_invalidations(DistributionId='{id}')['InvalidationList'].get('Items', [])\npaths = sorted(p for i in items for p in c.get_invalidation(DistributionId='{id}', Id=i['Id'])['Invalidation']['InvalidationBatch']['Paths']['Items'])\nprint(json.dumps(paths))"
        ),
    )
}

/// cloudfront::invalidate through the AWS SDK against moto, checked with boto3; the stdlib cdn
/// module uses it; an unknown distribution is named.
#[test]
fn cloudfront_invalidation_through_the_sdk() {
    let (_d, m) = moto();
    let id = distribution(&m);
    let script = format!(
        r#"
        import "cdn" as cdn;
        let r = cloudfront::invalidate(#{{ distribution_id: "{id}", paths: ["/*", "/api/status"], endpoint_url: inventory.dns.endpoint_url }});
        log(`invalidation ${{r.id}}: ${{r.status}}`);
        let s = cdn::cloudfront_invalidate("{id}", ["/index.html"], inventory.dns.endpoint_url);
        log(`stdlib: ${{s.status}}`);
        try {{ cloudfront::invalidate(#{{ distribution_id: "ENOSUCH", paths: ["/*"], endpoint_url: inventory.dns.endpoint_url, retries: 0 }}); }}
        catch (e) {{ log(`unknown: ${{e}}`); }}
        "#
    );
    test(&m, &script)
        .run(&[])
        .code(0)
        .stdout("invalidation ")
        .stdout("stdlib: ")
        .stdout("unknown: cloudfront::invalidate failed: invalidating distribution ENOSUCH")
        .check();
    assert_eq!(
        invalidated_paths(&m, &id),
        r#"["/*", "/api/status", "/index.html"]"#
    );
}
