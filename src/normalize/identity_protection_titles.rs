//! Portal names of Identity Protection risk event types.

/// Portal name of a `riskEventType`; unknown values are split from camelCase.
pub(crate) fn risk_title(t: &str) -> String {
    const TABLE: &[(&str, &str)] = &[
        ("adminConfirmedUserCompromised", "Admin confirmed user compromised"),
        ("anomalousToken", "Anomalous token"),
        ("anomalousUserActivity", "Anomalous user activity"),
        ("anonymizedIPAddress", "Anonymous IP address"),
        ("attackerinTheMiddle", "Attacker in the Middle"),
        ("generic", "Additional risk detected"),
        ("impossibleTravel", "Impossible travel"),
        ("mcasImpossibleTravel", "Impossible travel"),
        (
            "investigationsThreatIntelligence",
            "Microsoft Entra threat intelligence",
        ),
        ("leakedCredentials", "Leaked credentials"),
        ("maliciousIPAddress", "Malicious IP address"),
        ("malwareInfectedIPAddress", "Malware linked IP address"),
        (
            "mcasSuspiciousInboxManipulationRules",
            "Suspicious inbox manipulation rules",
        ),
        ("nationStateIP", "Microsoft Entra threat intelligence"),
        ("newCountry", "New country"),
        ("passwordSpray", "Password spray"),
        ("riskyIPAddress", "Activity from anonymous IP address"),
        ("suspiciousAPITraffic", "Suspicious API traffic"),
        ("suspiciousBrowser", "Suspicious browser"),
        ("suspiciousInboxForwarding", "Suspicious inbox forwarding"),
        ("suspiciousIPAddress", "Suspicious IP address"),
        ("suspiciousSendingPatterns", "Suspicious sending patterns"),
        ("tokenIssuerAnomaly", "Token issuer anomaly"),
        ("unfamiliarFeatures", "Unfamiliar sign-in properties"),
        ("unlikelyTravel", "Atypical travel"),
        (
            "adminConfirmedServicePrincipalCompromised",
            "Admin confirmed service principal compromised",
        ),
        ("suspiciousSignins", "Suspicious sign-ins"),
        (
            "anomalousServicePrincipalActivity",
            "Anomalous service principal activity",
        ),
        ("maliciousApplication", "Malicious application"),
        ("suspiciousApplication", "Suspicious application"),
    ];
    if let Some((_, title)) = TABLE.iter().find(|(k, _)| k.eq_ignore_ascii_case(t)) {
        return (*title).to_owned();
    }
    let mut out = String::with_capacity(t.len() + 4);
    let mut prev_lower = false;
    for (i, c) in t.chars().enumerate() {
        if c.is_ascii_uppercase() && prev_lower {
            out.push(' ');
            out.push(c.to_ascii_lowercase());
        } else if i == 0 {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c);
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
    }
    out
}
