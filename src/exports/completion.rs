//! What JS hands back to complete a `leak` or `recycle` draft (`completeEvent`): where the
//! heap grew, as js/profile.js and js/jobs.js measured it, converted into the event's
//! typed `Attribution`.

use napi_derive::napi;
use serde_json::Value;

use crate::event::{
    Attribution, GrownSites, JobAttribution, JobShare, JobsFit, Position, Since, Site,
};

/// A compiled position (`generated`, when a source map gave the original).
#[napi(object)]
pub struct PositionInput {
    pub file: String,
    pub line: f64,
    pub column: f64,
}

/// One grown allocation site (js/profile.js `grownSites`).
#[napi(object)]
pub struct SiteInput {
    pub site: String,
    pub function_name: String,
    pub file: String,
    pub line: f64,
    pub column: f64,
    pub generated: Option<PositionInput>,
    pub bytes: f64,
    pub growth: f64,
    pub share: f64,
}

/// One named job type (js/jobs.js `attribute`).
#[napi(object)]
pub struct JobShareInput {
    pub name: String,
    pub jobs: f64,
    pub retained_per_job: f64,
    pub share: f64,
}

#[napi(object)]
pub struct JobsFitInput {
    pub windows: f64,
    pub jobs: f64,
    /// A number, or null before the fit ran (an object field's `Option` refuses null).
    pub r2: Option<Value>,
    pub why: Option<String>,
}

/// Everything optional: an empty object completes the event as it was decided.
#[napi(object)]
pub struct AttributionInput {
    /// The sites that grew, largest first (the event keeps these).
    pub top_sites: Option<Vec<SiteInput>>,
    /// What they grew against, with `topSites`: `baseline` or `start`.
    pub since: Option<String>,
    pub profile_skipped: Option<String>,
    /// With `jobsFit`, once a job was named.
    pub top_jobs: Option<Vec<JobShareInput>>,
    pub jobs_fit: Option<JobsFitInput>,
    /// The report's `profile` section, for the recycle under way.
    pub report_profile: Option<Value>,
}

impl AttributionInput {
    /// The typed attribution and the report's profile section; `Err` names what is
    /// wrong and what is accepted.
    pub fn into_parts(self) -> Result<(Attribution, Option<Value>), String> {
        let sites = match (self.top_sites, self.since) {
            (None, _) => None,
            (Some(top), since) => {
                let since = since.as_deref().and_then(Since::parse).ok_or_else(|| {
                    format!(
                        "completeEvent: topSites needs since 'baseline' or 'start', got {:?}",
                        since.unwrap_or_default()
                    )
                })?;
                Some(GrownSites {
                    since,
                    top: top.into_iter().map(Site::from).collect(),
                })
            }
        };
        let jobs = match (self.top_jobs, self.jobs_fit) {
            (None, None) => None,
            (Some(top), Some(fit)) => Some(JobAttribution {
                top: top.into_iter().map(JobShare::from).collect(),
                fit: JobsFit {
                    windows: fit.windows,
                    jobs: fit.jobs,
                    r2: match fit.r2 {
                        None | Some(Value::Null) => None,
                        Some(Value::Number(r2)) => r2.as_f64(),
                        Some(other) => {
                            return Err(format!(
                                "completeEvent: jobsFit.r2 must be a number or null, got {other}"
                            ))
                        }
                    },
                    why: fit.why,
                },
            }),
            _ => {
                return Err(
                    "completeEvent: topJobs and jobsFit come together (js/jobs.js attribute()), got one of them"
                        .to_string(),
                )
            }
        };
        Ok((
            Attribution {
                sites,
                profile_skipped: self.profile_skipped,
                jobs,
            },
            self.report_profile,
        ))
    }
}

impl From<SiteInput> for Site {
    fn from(site: SiteInput) -> Site {
        Site {
            site: site.site,
            function_name: site.function_name,
            file: site.file,
            line: site.line,
            column: site.column,
            generated: site.generated.map(|at| Position {
                file: at.file,
                line: at.line,
                column: at.column,
            }),
            bytes: site.bytes,
            growth: site.growth,
            share: site.share,
        }
    }
}

impl From<JobShareInput> for JobShare {
    fn from(job: JobShareInput) -> JobShare {
        JobShare {
            name: job.name,
            jobs: job.jobs,
            retained_per_job: job.retained_per_job,
            share: job.share,
        }
    }
}
