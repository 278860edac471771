//! CronJobs: when one last succeeded — the freshness of the backup a risky procedure relies on.

use k8s_openapi::api::batch::v1::CronJob;

use super::*;

input! {
    k8s:
    pub struct CronJobInput {
        /// The CronJob's name (e.g. the database backup's).
        pub name: String,
        /// The namespace (default: the context's).
        pub namespace: Option<String>,
        /// How old the last success may be (e.g. "26h"); sets `fresh` and `stale`.
        pub max_age: Option<Dur>,
    }
}

/// A CronJob's last runs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CronJobStatus {
    /// The schedule, e.g. "0 2 * * *".
    pub schedule: String,
    pub suspended: bool,
    /// When a run last started (RFC 3339), if ever.
    pub last_schedule: Option<String>,
    /// When a run last succeeded (RFC 3339), if ever.
    pub last_successful: Option<String>,
    /// Seconds since the last success, if there was one.
    pub age_seconds: Option<i64>,
    /// Runs going on now.
    pub active: usize,
    /// With `max_age`: whether the last success is at most that old.
    pub fresh: Option<bool>,
    /// With `max_age`, when not fresh: why, in words.
    pub stale: Option<String>,
}

action! {
    /// A CronJob's schedule and its last scheduled and last successful run, with the age of the
    /// last success (the backup freshness check before risky work).
    CronJobState(CronJobInput) -> CronJobStatus = Spec::read("k8s", "cronjob").timeout(30)
        .limit_kept_by_engine()
}

impl Action for CronJobState {
    fn describe(input: &CronJobInput) -> String {
        format!("read CronJob {} in {}", input.name, input.context)
    }

    fn predict(input: &CronJobInput) -> CronJobStatus {
        CronJobStatus {
            schedule: String::new(),
            suspended: false,
            last_schedule: None,
            last_successful: None,
            age_seconds: None,
            active: 0,
            fresh: input.max_age.map(|_| true),
            stale: None,
        }
    }

    async fn run(input: CronJobInput, cx: Cx) -> Result<CronJobStatus, ActionError> {
        let cluster = input.cluster();
        let (client, default_ns) = client(&cluster, &cx).await?;
        let ns = input.namespace.clone().unwrap_or(default_ns);
        let api: Api<CronJob> = Api::namespaced(client, &ns);
        let job = api
            .get(&input.name)
            .await
            .map_err(|e| kube_error(&format!("CronJob {ns}/{}", input.name), &input.context, e))?;
        let spec = job.spec.unwrap_or_default();
        let status = job.status.unwrap_or_default();
        let rfc = |t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time| {
            t.0.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        };
        let now_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let age_seconds = status
            .last_successful_time
            .as_ref()
            .map(|t| now_secs - t.0.timestamp());
        let what = format!("CronJob {ns}/{} in {}", input.name, input.context);
        let stale = input.max_age.and_then(|max| {
            let limit = humantime::format_duration(max.0);
            match age_seconds {
                None => Some(format!("{what} has never succeeded")),
                Some(age) if age > max.0.as_secs() as i64 => Some(format!(
                    "{what} last succeeded {} ago, more than {limit}",
                    humantime::format_duration(std::time::Duration::from_secs(age.max(0) as u64))
                )),
                Some(_) => None,
            }
        });
        Ok(CronJobStatus {
            schedule: spec.schedule,
            suspended: spec.suspend.unwrap_or(false),
            last_schedule: status.last_schedule_time.as_ref().map(rfc),
            last_successful: status.last_successful_time.as_ref().map(rfc),
            age_seconds,
            active: status.active.map(|a| a.len()).unwrap_or(0),
            fresh: input.max_age.map(|_| stale.is_none()),
            stale,
        })
    }
}
