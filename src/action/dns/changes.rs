//! Changing record sets: upsert, delete.

use super::*;

input! {
    route53:
    pub struct UpsertInput {
        /// The hosted zone: its id (Z123...) or its name (example.com).
        pub zone: String,
        /// The record sets to create or replace, in one change batch.
        pub records: Vec<Record>,
    }
}

fn check_weight(r: &Record) -> Result<(), ActionError> {
    match r.weight {
        Some(w) if !(0..=255).contains(&w) => Err(ActionError::permanent(format!(
            "{}: weight {w} is outside 0–255",
            r.name
        ))),
        Some(_) if r.set_identifier.is_none() => Err(ActionError::permanent(format!(
            "{}: a weighted record needs a set_identifier",
            r.name
        ))),
        _ => Ok(()),
    }
}

action! {
    /// Create or replace record sets (UPSERT) in one change batch; records already so are left
    /// alone.
    Upsert(UpsertInput) -> Applied = Spec::converge("dns", "upsert").retries(2)
}

impl Action for Upsert {
    fn describe(input: &UpsertInput) -> String {
        let shown: Vec<String> = input.records.iter().map(Record::shown).collect();
        format!("upsert in {}: {}", input.zone, shown.join("; "))
    }

    fn predict(_: &UpsertInput) -> Applied {
        predicted()
    }

    async fn run(input: UpsertInput, _cx: Cx) -> Result<Applied, ActionError> {
        let (c, endpoint, zone) =
            zone_client(&input.endpoint_url, &input.region, &input.zone).await?;
        let existing = list(&c, &endpoint, &zone, None, None).await?;
        let mut changes = Vec::new();
        for r in &input.records {
            check_weight(r)?;
            let mut wanted = r.clone();
            wanted.name = fqdn(&wanted.name);
            wanted.rtype = wanted.rtype.to_ascii_uppercase();
            let same = existing.iter().any(|e| {
                let mut e = e.clone();
                e.name = fqdn(&e.name);
                e == wanted
            });
            if !same {
                changes.push(r.change(ChangeAction::Upsert)?);
            }
        }
        if changes.is_empty() {
            return Ok(unchanged());
        }
        change(&c, &endpoint, &zone, changes, "runbook dns::upsert").await
    }
}

action! {
    /// Delete a record set as it now is (a no-op when it does not exist).
    Delete(RecordKey) -> Applied = Spec::converge("dns", "delete").retries(2)
}

impl Action for Delete {
    fn describe(input: &RecordKey) -> String {
        let id = input
            .set_identifier
            .as_deref()
            .map(|s| format!(" [{s}]"))
            .unwrap_or_default();
        format!(
            "delete {} {}{id} in {}",
            input.name, input.rtype, input.zone
        )
    }

    fn predict(_: &RecordKey) -> Applied {
        predicted()
    }

    async fn run(input: RecordKey, _cx: Cx) -> Result<Applied, ActionError> {
        let (c, endpoint, zone) =
            zone_client(&input.endpoint_url, &input.region, &input.zone).await?;
        let found = list(&c, &endpoint, &zone, Some(&input.name), Some(&input.rtype)).await?;
        let Some(current) = found
            .into_iter()
            .find(|r| r.set_identifier == input.set_identifier)
        else {
            return Ok(unchanged());
        };
        // Route53 deletes only an exact match of the record as it stands.
        let delete = current.change(ChangeAction::Delete)?;
        change(&c, &endpoint, &zone, vec![delete], "runbook dns::delete").await
    }
}
