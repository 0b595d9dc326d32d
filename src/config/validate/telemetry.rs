//! `[telemetry]`: the OTLP/HTTP collector that receives request spans, and the service name
//! they carry.

use super::Checker;
use crate::config::TelemetryConfig;
use crate::config::raw::RawTelemetry;

/// `service.name` when the section does not say.
const DEFAULT_SERVICE_NAME: &str = "tollgate";

impl Checker<'_> {
    pub(super) fn telemetry(&mut self, raw: RawTelemetry) -> Option<TelemetryConfig> {
        let endpoint = self.required("telemetry.otlp_endpoint", raw.otlp_endpoint)?;
        let endpoint = self.url("telemetry.otlp_endpoint", &endpoint)?;
        // The collector's base URL (OTLP/HTTP's `OTEL_EXPORTER_OTLP_ENDPOINT`): traces go to
        // `/v1/traces` below it. A query or fragment would end up in the middle of that path.
        if endpoint.query().is_some() || endpoint.fragment().is_some() {
            self.problem(
                "telemetry.otlp_endpoint",
                "must be the collector's base URL, without a query or fragment",
            );
            return None;
        }
        // The exporter never sends a URL's user name and password (its client drops them): a
        // collector that needs them would refuse every export, with no hint why.
        if !endpoint.username().is_empty() || endpoint.password().is_some() {
            self.problem(
                "telemetry.otlp_endpoint",
                "must not hold a user name or password, which the exporter does not send \
                 (give credentials in OTEL_EXPORTER_OTLP_HEADERS)",
            );
            return None;
        }
        let traces_url = match endpoint.join(&format!(
            "{}/v1/traces",
            endpoint.path().trim_end_matches('/')
        )) {
            Ok(url) => url,
            Err(error) => {
                self.problem("telemetry.otlp_endpoint", error.to_string());
                return None;
            }
        };
        let service_name = raw
            .service_name
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
        if service_name.trim().is_empty() {
            self.problem("telemetry.service_name", "must not be empty");
            return None;
        }
        Some(TelemetryConfig {
            traces_url,
            service_name,
        })
    }
}
