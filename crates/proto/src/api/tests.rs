use super::*;

#[test]
fn error_body_leaves_out_an_empty_detail() {
    let b = ErrorBody {
        message: "No such workspace.".into(),
        detail: String::new(),
    };
    assert_eq!(
        serde_json::to_string(&b).expect("ser"),
        r#"{"message":"No such workspace."}"#
    );
    let back: ErrorBody = serde_json::from_str(r#"{"message":"m","detail":"d"}"#).expect("de");
    assert_eq!((back.message.as_str(), back.detail.as_str()), ("m", "d"));
    let bare: ErrorBody = serde_json::from_str(r#"{"message":"m"}"#).expect("de");
    assert_eq!(bare.detail, "");
}

#[test]
fn connection_info_has_its_exact_bytes_and_tolerates_missing_flags() {
    let info = ConnectionInfo {
        derp_map: DerpMap::default(),
        derp_force_websockets: true,
        disable_direct_connections: false,
    };
    assert_eq!(
        serde_json::to_string(&info).expect("ser"),
        r#"{"derp_map":{"Regions":{}},"derp_force_websockets":true,"disable_direct_connections":false}"#
    );
    let lean: ConnectionInfo = serde_json::from_str(r#"{"derp_map":{}}"#).expect("de");
    assert!(!lean.derp_force_websockets && !lean.disable_direct_connections);
    assert!(serde_json::from_str::<ConnectionInfo>("{}").is_err());
}

#[test]
fn enums_are_lowercase_words() {
    assert_eq!(
        serde_json::to_string(&[AgentStatus::Connected, AgentStatus::Disconnected]).expect("ser"),
        r#"["connected","disconnected"]"#
    );
    assert_eq!(
        serde_json::to_string(&[Severity::Ok, Severity::Warning, Severity::Error]).expect("ser"),
        r#"["ok","warning","error"]"#
    );
    assert!(Severity::Ok < Severity::Warning && Severity::Warning < Severity::Error);
}

#[test]
fn create_user_admin_flag_is_optional() {
    let r: CreateUserRequest =
        serde_json::from_str(r#"{"username":"a","email":"a@b","password":"12345678"}"#)
            .expect("de");
    assert!(!r.is_admin);
}

#[test]
fn workspace_has_its_exact_bytes() {
    let created = chrono::DateTime::parse_from_rfc3339("2024-01-02T03:04:05Z")
        .expect("time")
        .with_timezone(&Utc);
    let ws = Workspace {
        id: Uuid::from_u128(1),
        name: "dev".into(),
        owner: "alice".into(),
        agent_id: Uuid::from_u128(2),
        status: AgentStatus::Disconnected,
        last_seen_at: None,
        relay: Some(Relay {
            region_id: 999,
            region_code: "tether".into(),
            region_name: "tether".into(),
        }),
        created_at: created,
        agent_version: None,
        server_path: None,
    };
    assert_eq!(
        serde_json::to_string(&ws).expect("ser"),
        concat!(
            r#"{"id":"00000000-0000-0000-0000-000000000001","name":"dev","owner":"alice","#,
            r#""agent_id":"00000000-0000-0000-0000-000000000002","status":"disconnected","#,
            r#""last_seen_at":null,"relay":{"region_id":999,"region_code":"tether","region_name":"tether"},"#,
            r#""created_at":"2024-01-02T03:04:05Z","agent_version":null,"server_path":null}"#
        )
    );
    // A server from before the server's node: both fields read as null.
    let old = concat!(
        r#"{"id":"00000000-0000-0000-0000-000000000001","name":"dev","owner":"alice","#,
        r#""agent_id":"00000000-0000-0000-0000-000000000002","status":"connected","#,
        r#""last_seen_at":null,"relay":null,"created_at":"2024-01-02T03:04:05Z"}"#
    );
    let back: Workspace = serde_json::from_str(old).expect("de");
    assert_eq!((back.agent_version, back.server_path), (None, None));
}

#[test]
fn server_path_as_the_dashboard_reads_it() {
    let p = ServerPath {
        kind: PathKind::Derp,
        latency_ms: Some(12.5),
        derp_region: Some("tether embedded relay".into()),
        endpoint: None,
        reason: Some("UDP is blocked".into()),
    };
    assert_eq!(
        serde_json::to_string(&p).expect("ser"),
        r#"{"kind":"derp","latency_ms":12.5,"derp_region":"tether embedded relay","endpoint":null,"reason":"UDP is blocked"}"#
    );
    let ports: ListeningPorts = serde_json::from_str(
        r#"{"ports":[{"process_name":"python3","network":"tcp","port":8000},{"network":"tcp","port":9000}]}"#,
    )
    .expect("de");
    assert_eq!(ports.ports[1].process_name, "");
    assert_eq!(ports.ports[0].port, 8000);
}
