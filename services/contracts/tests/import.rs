//! The import of the installed base over real gRPC (a client stream) into
//! real PostgreSQL: a good file written whole, the same file again
//! changing nothing, changed values and the 5% cap, and every hostile
//! file refused by line with nothing written.

use futures_util::stream;
use hotline_kit::{
    auth::Role,
    testing::{TestApp, TestEnv},
};
use hotline_proto::contracts::v1::{
    self as pb, contracts_service_client::ContractsServiceClient, entitlement_request::Key,
};
use tonic::{Code, Status, service::interceptor::InterceptedService, transport::Channel};

type Client = ContractsServiceClient<InterceptedService<Channel, hotline_kit::grpc::BearerToken>>;

const HEADER: &str = "customer,branch,branch_email,branch_timezone,region,contact_name,contact_email,contact_phone,project,accepted_on,lat,lng,model,family,serial,price,currency,firmware";

struct Desk {
    env: TestEnv,
    app: TestApp,
}

impl Desk {
    async fn start() -> Self {
        let mut env = TestEnv::new().await.unwrap();
        env.config.set("contracts", "country_code", "49");
        let app = env.start(&[hotline_contracts::module()]).await.unwrap();
        Self { env, app }
    }

    fn client(&self, role: Role) -> Client {
        ContractsServiceClient::new(self.app.channel(&self.env.token("mia", role)))
    }

    /// Sends `file` in pieces of `piece` bytes as `role`.
    async fn import_as(
        &self,
        role: Role,
        file: &[u8],
        piece: usize,
    ) -> Result<pb::ImportSummary, Status> {
        let pieces: Vec<pb::ImportChunk> = file
            .chunks(piece.max(1))
            .map(|data| pb::ImportChunk {
                data: data.to_vec(),
            })
            .collect();
        self.client(role)
            .import_installed_base(stream::iter(pieces))
            .await
            .map(|r| r.into_inner())
    }

    async fn import(&self, file: &str) -> pb::ImportSummary {
        self.import_as(Role::Manager, file.as_bytes(), 7)
            .await
            .unwrap()
    }

    /// Rows of the installed base: nothing written means all zero.
    async fn stored(&self) -> [i64; 6] {
        let pool = self.env.pool("contracts").unwrap();
        let mut counts = [0; 6];
        for (count, table) in counts.iter_mut().zip([
            "customers",
            "branches",
            "contacts",
            "projects",
            "models",
            "assets",
        ]) {
            *count = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
                .fetch_one(&pool)
                .await
                .unwrap();
        }
        counts
    }

    async fn stop(self) {
        self.app.stop().await.unwrap();
        self.env.cleanup_bus(&[]).await.unwrap();
    }
}

/// `(created, updated, unchanged)`.
fn counts(counts: &Option<pb::ImportCounts>) -> (u64, u64, u64) {
    let c = counts.unwrap_or_default();
    (c.created, c.updated, c.unchanged)
}

/// Acme (two branches, a contact named on both, two projects) and Globex:
/// five assets, three models. Columns in another order than the issue's,
/// names in other letter cases, a quoted comma, a byte order mark and CRLF.
fn good_file() -> String {
    [
        "\u{feff}Serial,Customer,Branch,Branch_Email,Branch_Timezone,Region,Contact_Name,Contact_Email,Contact_Phone,Project,Accepted_On,Lat,Lng,Model,Family,Price,Currency,Firmware",
        "CAM-1,Acme,Berlin,berlin@acme.example,Europe/Berlin,north,Ann Lee,Ann@Acme.example,030 1234567,HQ,2024-01-15,52.52,13.405,DS-2CD2143,camera,6000,EUR,5.7.3",
        "NVR-1,ACME,berlin,BERLIN@acme.example,Europe/Berlin,north,ann lee,ann@acme.example,+49 30 1234567,hq,2024-01-15,52.52,13.405,DS-7608,NVR,4000.00,eur,4.1",
        "CAM-2,Acme,Potsdam,potsdam@acme.example,Europe/Berlin,,Ann Lee,ann@acme.example,+49301234567,\"Lobby, east\",2023-08-31,,,DS-2CD2143,,1500.5,EUR,",
        "PTZ-1,Acme,Potsdam,potsdam@acme.example,Europe/Berlin,,,,,\"Lobby, east\",2023-08-31,,,DS-2DE4425,ptz,2500,EUR,",
        "SH-1,Globex,Shanghai,ops@globex.example,Asia/Shanghai,east,Li Wei,li@globex.example,+86 21 5555 0000,Tower,2025-03-01,31.23,121.47,DS-7608,,900,CNY,4.1",
    ]
    .join("\r\n")
}

#[tokio::test]
async fn a_good_file_is_written_whole_and_importing_it_again_changes_nothing() {
    let desk = Desk::start().await;
    let summary = desk.import(&good_file()).await;
    assert_eq!(summary.error_count, 0, "{:?}", summary.errors);
    assert_eq!(summary.rows, 5);
    assert_eq!(counts(&summary.customers), (2, 0, 0));
    assert_eq!(counts(&summary.branches), (3, 0, 0));
    assert_eq!(counts(&summary.contacts), (2, 0, 0));
    assert_eq!(counts(&summary.projects), (3, 0, 0));
    assert_eq!(counts(&summary.models), (3, 0, 0));
    assert_eq!(counts(&summary.assets), (5, 0, 0));
    assert_eq!(desk.stored().await, [2, 3, 2, 3, 3, 5]);
    // The planner knows the tables as the import left them: plans made
    // for empty tables would scan every asset to answer one caller.
    let planned: f32 = sqlx::query_scalar(
        "SELECT reltuples FROM pg_class WHERE oid = 'contracts.assets'::regclass",
    )
    .fetch_one(&desk.env.pool("contracts").unwrap())
    .await
    .unwrap();
    assert_eq!(planned, 5.0, "the assets' statistics after the import");

    // What the desk sees: the caller by the number in any format, the
    // asset with its warranty from the project's acceptance.
    let mut client = desk.client(Role::Agent);
    let caller = client
        .entitlement(pb::EntitlementRequest {
            key: Some(Key::Phone("0049 30 1234567".into())),
            on: "2024-06-01".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(caller.r#match, pb::Match::Found as i32);
    assert_eq!(caller.customer.unwrap().name, "Acme");
    let contact = caller.contact.unwrap();
    assert_eq!(contact.email, "ann@acme.example");
    assert_eq!(
        contact.branch_id, "",
        "named for two branches: the whole customer's"
    );
    assert_eq!(caller.assets.len(), 4, "all of Acme's");
    let lobby = client
        .get_asset(pb::GetAssetRequest {
            serial: "cam-2".into(),
            on: "2024-06-01".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lobby.project, "Lobby, east");
    assert_eq!(lobby.price, "1500.50");
    assert_eq!(lobby.family, "camera", "the catalogue's");
    assert_eq!(lobby.warranty_until, "2024-08-30");
    let recorder = client
        .get_asset(pb::GetAssetRequest {
            serial: "NVR-1".into(),
            on: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(recorder.family, "nvr");
    assert_eq!(recorder.currency, "EUR");
    let acme = client
        .get_customer(pb::GetCustomerRequest {
            customer: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acme.customer.unwrap().name, "Acme", "the first spelling");
    let berlin = acme.branches.iter().find(|b| b.name == "Berlin").unwrap();
    assert_eq!(berlin.notice_email, "berlin@acme.example");
    assert_eq!(berlin.region, "north");
    let hq = acme.projects.iter().find(|p| p.name == "HQ").unwrap();
    assert_eq!((hq.lat, hq.lng), (Some(52.52), Some(13.405)));
    assert_eq!(hq.time_zone, "Europe/Berlin");

    // The same file, in other pieces: nothing is written, and it says so.
    let again = desk
        .import_as(Role::Manager, good_file().as_bytes(), 4096)
        .await
        .unwrap();
    assert_eq!(again.error_count, 0, "{:?}", again.errors);
    assert_eq!(counts(&again.customers), (0, 0, 2));
    assert_eq!(counts(&again.branches), (0, 0, 3));
    assert_eq!(counts(&again.contacts), (0, 0, 2));
    assert_eq!(counts(&again.projects), (0, 0, 3));
    assert_eq!(counts(&again.models), (0, 0, 3));
    assert_eq!(counts(&again.assets), (0, 0, 5));
    assert_eq!(desk.stored().await, [2, 3, 2, 3, 3, 5]);
    desk.stop().await;
}

#[tokio::test]
async fn a_changed_file_updates_what_changed_and_a_price_change_keeps_the_cap() {
    let desk = Desk::start().await;
    desk.import(&good_file()).await;
    // A contract at exactly 5% of CAM-1 and NVR-1 (10000.00 EUR).
    let mut manager = desk.client(Role::Manager);
    manager
        .create_contract(pb::CreateContractRequest {
            customer: "Acme".into(),
            serials: vec!["CAM-1".into(), "NVR-1".into()],
            start: "2025-01-15".into(),
            end: "2026-01-14".into(),
            fee: "500.00".into(),
            currency: "EUR".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // New firmware on CAM-1, Berlin's region renamed, HQ accepted later,
    // Ann's number changed, a new asset: each counted once.
    let changed = good_file()
        .replace("6000,EUR,5.7.3", "6000,EUR,5.8.0")
        .replace(",north,", ",north-east,")
        .replace("HQ,2024-01-15", "HQ,2024-02-01")
        .replace("hq,2024-01-15", "hq,2024-02-01")
        .replace("030 1234567", "030 7654321")
        .replace("+49 30 1234567", "030 7654321")
        .replace("+49301234567", "030 7654321")
        + "\r\nCAM-3,Acme,Berlin,berlin@acme.example,Europe/Berlin,north-east,,,,HQ,2024-02-01,52.52,13.405,DS-2CD2143,,700,EUR,5.8.0";
    let summary = desk.import(&changed).await;
    assert_eq!(summary.error_count, 0, "{:?}", summary.errors);
    assert_eq!(counts(&summary.branches), (0, 1, 2));
    assert_eq!(counts(&summary.contacts), (0, 1, 1));
    assert_eq!(counts(&summary.projects), (0, 1, 2));
    assert_eq!(counts(&summary.assets), (1, 1, 4));
    let camera = manager
        .get_asset(pb::GetAssetRequest {
            serial: "CAM-1".into(),
            on: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(camera.firmware, "5.8.0");
    assert_eq!(
        camera.warranty_until, "2025-01-31",
        "follows the acceptance"
    );

    // A lower price on CAM-1 would put the contract over the cap: refused
    // on that row, and nothing of the file is written (not even the
    // firmware on the line before).
    let cheaper = changed
        .replace("6000,EUR,5.8.0", "2000,EUR,5.8.0")
        .replace("1500.5,EUR,", "1500.5,EUR,9.9");
    let refused = desk.import(&cheaper).await;
    assert_eq!(refused.error_count, 1, "{:?}", refused.errors);
    let fault = &refused.errors[0];
    assert_eq!(fault.line, 2);
    assert!(
        fault
            .reason
            .contains("the new price of \"CAM-1\" breaks contract")
            && fault.reason.contains(
                "exceeds 5% of the covered products' price (6000.00 EUR): at most 300.00 EUR"
            ),
        "{fault:?}"
    );
    assert_eq!(counts(&refused.assets), (0, 0, 0), "nothing written");
    let lobby = manager
        .get_asset(pb::GetAssetRequest {
            serial: "CAM-2".into(),
            on: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lobby.firmware, "", "the refused file changed nothing");

    // A higher price keeps the cap: written.
    let dearer = changed.replace("6000,EUR,5.8.0", "6500,EUR,5.8.0");
    let summary = desk.import(&dearer).await;
    assert_eq!(summary.error_count, 0, "{:?}", summary.errors);
    assert_eq!(counts(&summary.assets), (0, 1, 5));
    desk.stop().await;
}

/// A file with `rows` after the header.
fn file(rows: &[&str]) -> String {
    std::iter::once(HEADER)
        .chain(rows.iter().copied())
        .collect::<Vec<_>>()
        .join("\n")
}

const ROW: &str = "Acme,Berlin,berlin@acme.example,Europe/Berlin,north,Ann Lee,ann@acme.example,+49301234567,HQ,2024-01-15,52.52,13.405,DS-2CD2143,camera,6000,EUR,5.7.3";

/// [`ROW`] with serial `serial`.
fn row(serial: &str) -> String {
    ROW.replacen("camera,", &format!("camera,{serial},"), 1)
}

#[tokio::test]
async fn every_bad_row_is_refused_by_its_line_and_nothing_is_written() {
    let desk = Desk::start().await;
    let long = "x".repeat(10_000);
    let rows: Vec<String> = vec![
        row("OK-1"),                                              // 2
        row("NUL-1").replace("Ann Lee", "Ann\0Lee"),              // 3
        row("ESC-1").replace("5.7.3", "5.7\u{1b}[2J"),            // 4
        row("QUOTED-1").replace("north", "\"north\nand south\""), // 5-6
        row("FEW-1").replace(",EUR,5.7.3", ",EUR"),               // 7
        row("MANY-1") + ",extra",                                 // 8
        row("ok-1"),                                              // 9
        row("BRANCH-1").replace("berlin@acme", "other@acme"),     // 10
        row("PROJECT-1").replace("2024-01-15", "2024-02-01"),     // 11
        row("LONG-1").replace("north", &long),                    // 12
        row("PRICE-1").replace(",6000,", ",12,50,"),              // 13: a field too many
        row("PRICE-2").replace(",6000,", ",1e3,"),                // 14
        row("ZONE-1").replace("Europe/Berlin", "Mars/Olympus"),   // 15
        row("DATE-1").replace("2024-01-15", "2024-02-30"),        // 16
        row("PHONE-1").replace("+49301234567", "call me"),        // 17
        row("MAIL-1").replace("ann@acme.example", "ann"),         // 18
        row("MODEL-1").replace("DS-2CD2143,camera", "X-1,"),      // 19
        row("CUR-1").replace(",EUR,", ",EURO,"),                  // 20
        row("LAT-1").replace("52.52,13.405", "52.52,"),           // 21
        row("SHARED-1").replace(
            "Ann Lee,ann@acme.example,+49301234567",
            "Bob Ray,ann@acme.example,",
        ), // 22
        "\"never closed,x".to_owned(),                            // 23
    ];
    let mut bytes = file(&rows.iter().map(String::as_str).collect::<Vec<_>>()).into_bytes();
    // Bytes that are not UTF-8 on the line after the quoted line break.
    let at = bytes.windows(9).position(|w| w == b"and south").unwrap();
    bytes[at + 4] = 0xFF;
    let summary = desk.import_as(Role::Manager, &bytes, 5).await.unwrap();
    let faults: Vec<(u64, &str)> = summary
        .errors
        .iter()
        .map(|e| (e.line, e.reason.as_str()))
        .collect();
    let expect = [
        (3, "contact_name contains a NUL"),
        (4, "firmware contains a control character"),
        (6, "region is not UTF-8 text (byte 0xFF)"),
        (7, "17 fields, but the header has 18"),
        (8, "19 fields, but the header has 18"),
        (9, "serial \"ok-1\" is also on line 2"),
        (
            10,
            "has branch_email \"other@acme.example\" here but \"berlin@acme.example\" on line 2",
        ),
        (
            11,
            "has accepted_on \"2024-02-01\" here but \"2024-01-15\" on line 2",
        ),
        (12, "region is longer than 100 characters"),
        (13, "19 fields"),
        (14, "price: \"1e3\" is not an amount"),
        (15, "is not a time zone"),
        (16, "accepted_on \"2024-02-30\" is not a date"),
        (17, "contact_phone \"call me\" is not a phone number"),
        (18, "contact_email: \"ann\" is not an email address"),
        (19, "model \"X-1\" is not in the catalogue: give its family"),
        (20, "\"EURO\" is not a currency"),
        (21, "give both lat and lng, or neither"),
        (
            22,
            "contact_email \"ann@acme.example\" is also \"Ann Lee\"'s",
        ),
        (23, "a quoted field is never closed"),
    ];
    for (line, want) in expect {
        assert!(
            faults
                .iter()
                .any(|(l, reason)| *l == line && reason.contains(want)),
            "no fault {want:?} on line {line}: {faults:#?}"
        );
    }
    assert_eq!(summary.error_count as usize, faults.len(), "{faults:#?}");
    assert_eq!(summary.error_count, expect.len() as u64, "{faults:#?}");
    assert!(faults.windows(2).all(|w| w[0].0 <= w[1].0), "by line");
    assert_eq!(counts(&summary.assets), (0, 0, 0));
    assert_eq!(desk.stored().await, [0; 6], "nothing written");
    desk.stop().await;
}

#[tokio::test]
async fn what_is_stored_refuses_a_serial_a_contact_and_a_project_of_someone_else() {
    let desk = Desk::start().await;
    desk.import(&good_file()).await;
    let before = desk.stored().await;
    let rows = [
        // CAM-1 is Acme's, in HQ.
        "Initech,Main,main@initech.example,Europe/Berlin,,,,,Plant,2024-01-01,,,DS-7608,,100,EUR,",
        "Initech,Main,main@initech.example,Europe/Berlin,,,,,Plant,2024-01-01,,,DS-7608,,100,EUR,",
        // Ann's address and Li's number belong to other customers' contacts.
        "Initech,Main,main@initech.example,Europe/Berlin,,Joe Bloggs,ann@acme.example,,Plant,2024-01-01,,,DS-7608,,100,EUR,",
        "Initech,Main,main@initech.example,Europe/Berlin,,Jane Roe,,+86 21 5555 0000,Plant,2024-01-01,,,DS-7608,,100,EUR,",
        // Acme's project HQ is at Berlin.
        "Acme,Potsdam,potsdam@acme.example,Europe/Berlin,,,,,HQ,2024-01-15,52.52,13.405,DS-7608,,100,EUR,",
        // DS-7608 is an nvr in the catalogue.
        "Initech,Main,main@initech.example,Europe/Berlin,,,,,Plant,2024-01-01,,,DS-7608,camera,100,EUR,",
    ];
    let serials = ["CAM-1", "NEW-1", "NEW-2", "NEW-3", "NEW-4", "NEW-5"];
    let rows: Vec<String> = rows
        .iter()
        .zip(serials)
        .map(|(row, serial)| {
            let fields: Vec<&str> = row.split(',').collect();
            let mut fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
            fields.insert(14, serial.to_owned());
            fields.join(",")
        })
        .collect();
    let summary = desk
        .import(&file(&rows.iter().map(String::as_str).collect::<Vec<_>>()))
        .await;
    let faults: Vec<(u64, &str)> = summary
        .errors
        .iter()
        .map(|e| (e.line, e.reason.as_str()))
        .collect();
    for (line, want) in [
        (
            2,
            "serial \"CAM-1\" is already recorded in project \"HQ\" of \"Acme\"",
        ),
        (
            4,
            "contact_email \"ann@acme.example\" is already \"Ann Lee\"'s, a contact of \"Acme\"",
        ),
        (
            5,
            "contact_phone \"+862155550000\" is already \"Li Wei\"'s, a contact of \"Globex\"",
        ),
        (
            6,
            "project \"HQ\" of \"Acme\" is at branch \"Berlin\", not \"Potsdam\"",
        ),
        (
            7,
            "model \"DS-7608\" is a nvr in the catalogue, not a camera",
        ),
    ] {
        assert!(
            faults
                .iter()
                .any(|(l, reason)| *l == line && reason.contains(want)),
            "no fault {want:?} on line {line}: {faults:#?}"
        );
    }
    assert_eq!(summary.error_count, 5, "{faults:#?}");
    assert_eq!(desk.stored().await, before, "nothing written");
    desk.stop().await;
}

#[tokio::test]
async fn a_file_that_is_no_installed_base_is_refused_whole() {
    let desk = Desk::start().await;
    let refused = |file: Vec<u8>| {
        let desk = &desk;
        async move {
            desk.import_as(Role::Manager, &file, 3)
                .await
                .expect_err("refused")
        }
    };
    for (file, want) in [
        (Vec::new(), "the file is empty"),
        (b"\n\n".to_vec(), "the file is empty"),
        (format!("{HEADER}\r\n").into_bytes(), "a header but no rows"),
        (
            HEADER.replace(",firmware", "").into_bytes(),
            "the header has no column firmware",
        ),
        (
            format!("{HEADER},notes").into_bytes(),
            "unknown columns \"notes\"",
        ),
        (
            HEADER.replace("firmware", "serial").into_bytes(),
            "column serial appears 2 times",
        ),
        (
            HEADER.replace(',', ";").into_bytes(),
            "separated by semicolons",
        ),
        (b"\xFF\xFEc\0u\0".to_vec(), "UTF-16"),
    ] {
        let status = refused(file).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{want}: {status:?}");
        assert!(status.message().contains(want), "{want}: {status:?}");
    }
    assert_eq!(desk.stored().await, [0; 6]);
    desk.stop().await;
}

#[tokio::test]
async fn a_hundred_faults_are_listed_and_all_are_counted() {
    let desk = Desk::start().await;
    let rows: Vec<String> = (0..150)
        .map(|n| row(&format!("S-{n}")).replace(",6000,", ",bad,"))
        .collect();
    let summary = desk
        .import(&file(&rows.iter().map(String::as_str).collect::<Vec<_>>()))
        .await;
    assert_eq!(summary.error_count, 150);
    assert_eq!(summary.errors.len(), 100);
    assert_eq!(summary.errors[0].line, 2);
    assert_eq!(summary.errors[99].line, 101);
    desk.stop().await;
}

#[tokio::test]
async fn only_managers_and_admins_import_and_one_import_runs_at_a_time() {
    let desk = Desk::start().await;
    let file = file(&[&row("CAM-1")]);
    for role in [
        Role::Agent,
        Role::Dispatcher,
        Role::Technician,
        Role::Bridge,
    ] {
        let refused = desk
            .import_as(role, file.as_bytes(), 1024)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{role}");
    }
    assert_eq!(desk.stored().await, [0; 6]);

    // While another import holds the lock, this one is told to wait.
    let pool = desk.env.pool("contracts").unwrap();
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('contracts.import'))")
        .execute(&mut *holder)
        .await
        .unwrap();
    let busy = desk
        .import_as(Role::Manager, file.as_bytes(), 1024)
        .await
        .unwrap_err();
    assert_eq!(busy.code(), Code::FailedPrecondition);
    assert!(busy.message().contains("another import"), "{busy:?}");
    holder.rollback().await.unwrap();

    let admin = desk
        .import_as(Role::Admin, file.as_bytes(), 1024)
        .await
        .unwrap();
    assert_eq!(counts(&admin.assets), (1, 0, 0));
    desk.stop().await;
}
