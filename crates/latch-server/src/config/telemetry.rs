//! `[telemetry]` in `latch.toml`: OpenTelemetry traces exported over OTLP/HTTP (protobuf).
//! Off unless an endpoint is configured (here or in the environment).
//!
//! ```toml
//! [telemetry]
//! otlp_endpoint = "http://127.0.0.1:4318"  # the collector's OTLP/HTTP base URL (`/v1/traces` is added)
//! service_name = "latch"                    # the `service.name` resource attribute
//! sampling_ratio = 1.0                      # share of traces kept (0 to 1)
//! export_timeout = "10s"                    # one export's deadline
//! ```
//!
//! The standard OpenTelemetry environment variables override the file (OpenTelemetry
//! specification, "Environment Variable Specification" and "OTLP Exporter Configuration"):
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full traces URL), `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (a base URL, `/v1/traces` added), `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER_ARG` (the ratio)
//! and `OTEL_SDK_DISABLED=true` (no export whatever the file says).

use std::time::Duration;

use serde::Deserialize;

/// `[telemetry]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The OTLP/HTTP collector's base URL (`http://host:4318`); `/v1/traces` is appended unless
    /// the URL already ends with it. `None`: no traces are exported.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans (default `latch`).
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Share of traces sampled, 0 to 1 (default 1), decided at each trace's root span; the
    /// spans under it follow that decision (parent-based sampling).
    #[serde(default = "default_ratio")]
    pub sampling_ratio: f64,
    /// Deadline of one export request (default 10 s, 1 s to 60 s).
    #[serde(default = "default_export_timeout", with = "humantime_serde")]
    pub export_timeout: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: default_service_name(),
            sampling_ratio: default_ratio(),
            export_timeout: default_export_timeout(),
        }
    }
}

fn default_service_name() -> String {
    "latch".into()
}

fn default_ratio() -> f64 {
    1.0
}

fn default_export_timeout() -> Duration {
    Duration::from_secs(10)
}

/// What the exporter is built with: [`TelemetryConfig`] after the environment's overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    /// The full traces URL (`…/v1/traces`).
    pub traces_url: String,
    /// `service.name`.
    pub service_name: String,
    /// Root sampling ratio, 0 to 1.
    pub sampling_ratio: f64,
    /// One export's deadline.
    pub export_timeout: Duration,
}

/// The OTLP/HTTP traces path (OTLP specification, "OTLP/HTTP Request").
const TRACES_PATH: &str = "/v1/traces";

fn traces_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with(TRACES_PATH) {
        base.to_owned()
    } else {
        format!("{base}{TRACES_PATH}")
    }
}

impl TelemetryConfig {
    /// Checks the section.
    ///
    /// # Errors
    /// A ratio outside 0 to 1, an empty service name, an endpoint that is not an `http(s)` URL,
    /// a timeout outside 1 s to 60 s.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err("[telemetry] sampling_ratio must be between 0 and 1".into());
        }
        if self.service_name.trim().is_empty() {
            return Err("[telemetry] service_name must not be empty".into());
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&self.export_timeout) {
            return Err("[telemetry] export_timeout must be between 1s and 60s".into());
        }
        if let Some(e) = &self.otlp_endpoint {
            check_url(e).map_err(|m| format!("[telemetry] otlp_endpoint {m}"))?;
        }
        Ok(())
    }

    /// The settings after the environment's overrides (`env` reads one variable), or `None`
    /// when no endpoint is configured or `OTEL_SDK_DISABLED` is `true`.
    ///
    /// # Errors
    /// An override that is not a URL or not a ratio between 0 and 1.
    pub fn resolve(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<TelemetrySettings>, String> {
        let set = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let url = if let Some(u) = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            check_url(&u).map_err(|m| format!("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT {m}"))?;
            u
        } else if let Some(u) = set("OTEL_EXPORTER_OTLP_ENDPOINT") {
            check_url(&u).map_err(|m| format!("OTEL_EXPORTER_OTLP_ENDPOINT {m}"))?;
            traces_url(&u)
        } else if let Some(u) = &self.otlp_endpoint {
            traces_url(u)
        } else {
            return Ok(None);
        };
        let sampling_ratio = match set("OTEL_TRACES_SAMPLER_ARG") {
            Some(r) => r
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or("OTEL_TRACES_SAMPLER_ARG must be a ratio between 0 and 1")?,
            None => self.sampling_ratio,
        };
        Ok(Some(TelemetrySettings {
            traces_url: url,
            service_name: set("OTEL_SERVICE_NAME").unwrap_or_else(|| self.service_name.clone()),
            sampling_ratio,
            export_timeout: self.export_timeout,
        }))
    }
}

/// `Ok` for an absolute `http` or `https` URL; else the message's tail.
fn check_url(u: &str) -> Result<(), String> {
    match url::Url::parse(u) {
        Ok(p) if matches!(p.scheme(), "http" | "https") && p.host().is_some() => Ok(()),
        _ => Err("must be an http(s) URL".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn off_without_an_endpoint_and_the_environment_overrides_the_file() {
        let c = TelemetryConfig::default();
        assert_eq!(c.resolve(env(&[])).unwrap(), None);
        let c = TelemetryConfig {
            otlp_endpoint: Some("http://127.0.0.1:4318/".into()),
            ..TelemetryConfig::default()
        };
        let s = c.resolve(env(&[])).unwrap().unwrap();
        assert_eq!(s.traces_url, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(s.service_name, "latch");
        let s = c
            .resolve(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otel.example:4318"),
                ("OTEL_SERVICE_NAME", "latch-eu"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ]))
            .unwrap()
            .unwrap();
        assert_eq!(s.traces_url, "https://otel.example:4318/v1/traces");
        assert_eq!(s.service_name, "latch-eu");
        assert!((s.sampling_ratio - 0.25).abs() < f64::EPSILON);
        let s = c
            .resolve(env(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:9/custom",
            )]))
            .unwrap()
            .unwrap();
        assert_eq!(s.traces_url, "http://c:9/custom");
        assert_eq!(
            c.resolve(env(&[("OTEL_SDK_DISABLED", "true")])).unwrap(),
            None
        );
        assert!(c.resolve(env(&[("OTEL_TRACES_SAMPLER_ARG", "2")])).is_err());
    }

    #[test]
    fn validation() {
        let ok = TelemetryConfig {
            otlp_endpoint: Some("http://collector:4318".into()),
            ..TelemetryConfig::default()
        };
        assert!(ok.validate().is_ok());
        for bad in [
            TelemetryConfig {
                sampling_ratio: 1.5,
                ..ok.clone()
            },
            TelemetryConfig {
                otlp_endpoint: Some("collector:4318".into()),
                ..ok.clone()
            },
            TelemetryConfig {
                service_name: " ".into(),
                ..ok.clone()
            },
            TelemetryConfig {
                export_timeout: Duration::from_millis(10),
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
