//! What a `leak` or `recycle` event says about where the heap grew: the allocation sites
//! (PROFILE=heap) and the named job types (`track(p, { name })`). JS measures them (the
//! profile and the job ledger live there); they become typed fields of the event before it
//! is rendered, and its message names the top site and the top job (msg.rs).

use serde_json::{json, Map, Value};

/// What the sites grew against: the baseline, or the process start (no baseline yet, or
/// too young to say anything about growth).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    Baseline,
    Start,
}

impl Since {
    /// `baseline` or `start`, as js/profile.js names them; anything else is refused.
    pub fn parse(text: &str) -> Option<Since> {
        match text {
            "baseline" => Some(Since::Baseline),
            "start" => Some(Since::Start),
            _ => None,
        }
    }
}

/// A source position (the generated one, when a source map gave the original).
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    pub file: String,
    pub line: f64,
    pub column: f64,
}

/// One allocation site that grew beyond sampling noise.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// `functionName (file:line:column)`, or the function name alone.
    pub site: String,
    pub function_name: String,
    /// Relative to the working directory when under it; empty for V8 internals.
    pub file: String,
    pub line: f64,
    pub column: f64,
    /// The compiled position, when the site is the original one from a source map.
    pub generated: Option<Position>,
    /// Live sampled bytes now.
    pub bytes: f64,
    /// Bytes gained since `Since`.
    pub growth: f64,
    /// Part of all growth, 0-1.
    pub share: f64,
}

/// The sites that grew, largest first.
#[derive(Debug, Clone, PartialEq)]
pub struct GrownSites {
    pub since: Since,
    pub top: Vec<Site>,
}

/// A named job type the post-GC heap grew with.
#[derive(Debug, Clone, PartialEq)]
pub struct JobShare {
    pub name: String,
    pub jobs: f64,
    pub retained_per_job: f64,
    /// Part of the growth the fit explains, 0-1.
    pub share: f64,
}

/// How well the job counts explain the growth, and why nobody is named when they do not.
#[derive(Debug, Clone, PartialEq)]
pub struct JobsFit {
    pub windows: f64,
    pub jobs: f64,
    pub r2: Option<f64>,
    pub why: Option<String>,
}

/// Which named jobs the heap grew with (present once a job was named).
#[derive(Debug, Clone, PartialEq)]
pub struct JobAttribution {
    pub top: Vec<JobShare>,
    pub fit: JobsFit,
}

/// Everything JS adds to a `leak` or `recycle` event; empty when it knows nothing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Attribution {
    /// PROFILE=heap read the profile.
    pub sites: Option<GrownSites>,
    /// Why the sites are not there (PROFILE=off, a busy profiler, a failed read...).
    pub profile_skipped: Option<String>,
    pub jobs: Option<JobAttribution>,
}

impl Attribution {
    /// The sentences the message gains, each after `; `.
    pub(super) fn sentences(&self) -> Vec<String> {
        let mut sentences = Vec::new();
        if let Some(sites) = &self.sites {
            sentences.push(describe_top(&sites.top, sites.since));
        }
        if let Some(top) = self.jobs.as_ref().and_then(|jobs| jobs.top.first()) {
            sentences.push(format!(
                "most growth from job '{}' (~{} KiB per job, {}%)",
                top.name,
                js_round(top.retained_per_job / 1024.0),
                js_round(top.share * 100.0)
            ));
        }
        sentences
    }

    /// `topSites` or `profileSkipped`, then `topJobs` and `jobsFit`.
    pub(super) fn put_fields(&self, put: &mut impl FnMut(&str, Value)) {
        if let Some(sites) = &self.sites {
            put(
                "topSites",
                Value::Array(sites.top.iter().map(Site::to_json).collect()),
            );
        }
        if let Some(skipped) = &self.profile_skipped {
            put("profileSkipped", json!(skipped));
        }
        if let Some(jobs) = &self.jobs {
            put(
                "topJobs",
                Value::Array(jobs.top.iter().map(JobShare::to_json).collect()),
            );
            put("jobsFit", jobs.fit.to_json());
        }
    }
}

/// "most growth at load (src/enricher.js:42), 75%"; with no site, "no heap growth beyond
/// sampling noise since the baseline" (or "since the process started").
pub fn describe_top(sites: &[Site], since: Since) -> String {
    let Some(top) = sites.first() else {
        let since = match since {
            Since::Baseline => "the baseline",
            Since::Start => "the process started",
        };
        return format!("no heap growth beyond sampling noise since {since}");
    };
    let place = if top.file.is_empty() {
        top.function_name.clone()
    } else {
        format!(
            "{} ({}:{})",
            top.function_name,
            top.file,
            number_text(top.line)
        )
    };
    format!("most growth at {place}, {}%", js_round(top.share * 100.0))
}

impl Site {
    fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("site".into(), json!(self.site));
        object.insert("functionName".into(), json!(self.function_name));
        object.insert("file".into(), json!(self.file));
        object.insert("line".into(), number(self.line));
        object.insert("column".into(), number(self.column));
        if let Some(generated) = &self.generated {
            object.insert(
                "generated".into(),
                json!({
                    "file": generated.file,
                    "line": number(generated.line),
                    "column": number(generated.column),
                }),
            );
        }
        object.insert("bytes".into(), number(self.bytes));
        object.insert("growth".into(), number(self.growth));
        object.insert("share".into(), number(self.share));
        Value::Object(object)
    }
}

impl JobShare {
    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "jobs": number(self.jobs),
            "retainedPerJob": number(self.retained_per_job),
            "share": number(self.share),
        })
    }
}

impl JobsFit {
    fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("windows".into(), number(self.windows));
        object.insert("jobs".into(), number(self.jobs));
        object.insert("r2".into(), self.r2.map_or(Value::Null, number));
        if let Some(why) = &self.why {
            object.insert("why".into(), json!(why));
        }
        Value::Object(object)
    }
}

/// The largest integer a JS number holds exactly.
const SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// A JS number as JSON the way `JSON.stringify` writes it: whole numbers without `.0`,
/// NaN and infinities as null.
fn number(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() <= SAFE_INTEGER {
        json!(value as i64)
    } else {
        json!(value)
    }
}

/// A JS number in a sentence, as a template string prints it (whole numbers plainly).
fn number_text(value: f64) -> String {
    match number(value) {
        Value::Null => "NaN".to_string(),
        other => other.to_string(),
    }
}

/// `Math.round`: halves go up (toward +infinity), as the wording has always rounded.
fn js_round(value: f64) -> String {
    number_text((value + 0.5).floor())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(function_name: &str, file: &str, line: f64, share: f64) -> Site {
        Site {
            site: format!("{function_name} ({file}:{line}:5)"),
            function_name: function_name.into(),
            file: file.into(),
            line,
            column: 5.0,
            generated: None,
            bytes: 1024.0,
            growth: 512.0,
            share,
        }
    }

    #[test]
    fn the_top_site_is_named_with_its_file_line_and_share() {
        let sites = [
            site("load", "src/enricher.js", 42.0, 0.75),
            site("remember", "src/cache.js", 7.0, 0.25),
        ];
        assert_eq!(
            describe_top(&sites, Since::Baseline),
            "most growth at load (src/enricher.js:42), 75%"
        );
        assert_eq!(
            describe_top(&[], Since::Baseline),
            "no heap growth beyond sampling noise since the baseline"
        );
        assert_eq!(
            describe_top(&[], Since::Start),
            "no heap growth beyond sampling noise since the process started"
        );
        let internals = site("(V8 internals)", "", 0.0, 0.005);
        assert_eq!(
            describe_top(&[internals], Since::Start),
            "most growth at (V8 internals), 1%",
            "a half rounds up, as Math.round does"
        );
    }

    #[test]
    fn the_top_job_is_named_after_the_sites() {
        let attribution = Attribution {
            sites: Some(GrownSites {
                since: Since::Baseline,
                top: vec![site("leakFast", "src/cache.js", 7.0, 0.83)],
            }),
            profile_skipped: None,
            jobs: Some(JobAttribution {
                top: vec![JobShare {
                    name: "ingest".into(),
                    jobs: 120.0,
                    retained_per_job: 102_900.0,
                    share: 0.914,
                }],
                fit: JobsFit {
                    windows: 12.0,
                    jobs: 300.0,
                    r2: Some(0.97),
                    why: None,
                },
            }),
        };
        assert_eq!(
            attribution.sentences(),
            [
                "most growth at leakFast (src/cache.js:7), 83%",
                "most growth from job 'ingest' (~100 KiB per job, 91%)"
            ]
        );
        let mut fields = Map::new();
        attribution.put_fields(&mut |key, value| {
            fields.insert(key.to_string(), value);
        });
        let keys: Vec<&str> = fields.keys().map(String::as_str).collect();
        assert_eq!(keys, ["topSites", "topJobs", "jobsFit"]);
        assert_eq!(
            fields["topSites"][0],
            json!({
                "site": "leakFast (src/cache.js:7:5)",
                "functionName": "leakFast",
                "file": "src/cache.js",
                "line": 7,
                "column": 5,
                "bytes": 1024,
                "growth": 512,
                "share": 0.83
            })
        );
        assert_eq!(
            fields["topJobs"],
            json!([{ "name": "ingest", "jobs": 120, "retainedPerJob": 102_900, "share": 0.914 }])
        );
        assert_eq!(
            fields["jobsFit"],
            json!({ "windows": 12, "jobs": 300, "r2": 0.97 })
        );
    }

    #[test]
    fn no_named_job_leaves_the_message_alone_and_says_why() {
        let attribution = Attribution {
            sites: None,
            profile_skipped: Some("PROFILE=off".into()),
            jobs: Some(JobAttribution {
                top: vec![],
                fit: JobsFit {
                    windows: 2.0,
                    jobs: 40.0,
                    r2: None,
                    why: Some("2 windows between major GCs; 6 needed".into()),
                },
            }),
        };
        assert!(attribution.sentences().is_empty());
        let mut fields = Map::new();
        attribution.put_fields(&mut |key, value| {
            fields.insert(key.to_string(), value);
        });
        assert_eq!(fields["profileSkipped"], json!("PROFILE=off"));
        assert_eq!(
            fields["jobsFit"],
            json!({ "windows": 2, "jobs": 40, "r2": null, "why": "2 windows between major GCs; 6 needed" })
        );
        assert!(Attribution::default().sentences().is_empty());
    }

    #[test]
    fn numbers_come_out_as_json_stringify_writes_them() {
        assert_eq!(number(42.0), json!(42));
        assert_eq!(number(-3.0), json!(-3));
        assert_eq!(number(0.613), json!(0.613));
        assert_eq!(number(f64::NAN), Value::Null);
        assert_eq!(number(f64::INFINITY), Value::Null);
        assert_eq!(number_text(42.0), "42");
        assert_eq!(js_round(0.5), "1");
        assert_eq!(js_round(2.4999), "2");
    }
}
