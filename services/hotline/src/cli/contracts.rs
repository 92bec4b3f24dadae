//! `hotline customers|branches|contacts|projects|assets|contracts ...` and
//! `hotline entitlement`: the installed base and what it is entitled to,
//! through `ContractsService`. Customers, branches and projects are named
//! by id or by name; dates are YYYY-MM-DD; amounts are decimals like
//! 1234.50.

use std::time::Duration;

use clap::{Args, Subcommand};
use hotline_kit::config::parse_duration;
use hotline_proto::contracts::v1::{
    self as pb, contracts_service_client::ContractsServiceClient, entitlement_request::Key,
};
use serde_json::{Value, json};

use super::{Failure, Output, connect, tickets::optional};

#[derive(Subcommand)]
pub enum Command {
    /// Customers: the partners the desk serves.
    #[command(subcommand)]
    Customers(CustomersCommand),
    /// A customer's branches (sites with a time zone and a notice address).
    #[command(subcommand)]
    Branches(BranchesCommand),
    /// People who call or write for a customer.
    #[command(subcommand)]
    Contacts(ContactsCommand),
    /// Installations at a branch; their acceptance starts the warranty.
    #[command(subcommand)]
    Projects(ProjectsCommand),
    /// Devices installed in a project.
    #[command(subcommand)]
    Assets(AssetsCommand),
    /// Maintenance contracts after warranty (at most 5% of the price a year).
    #[command(subcommand)]
    Contracts(ContractsCommand),
    /// Who is calling and what they are entitled to.
    Entitlement(EntitlementArgs),
}

#[derive(Subcommand)]
pub enum CustomersCommand {
    /// Record a customer.
    Add {
        /// Its name, unique (case-blind).
        #[arg(long)]
        name: String,
        /// Its general address (contacts have their own).
        #[arg(long)]
        email: Option<String>,
        /// Its switchboard number, any format (stored in E.164).
        #[arg(long)]
        phone: Option<String>,
    },
    /// Customers by name; those whose name contains --text.
    List {
        /// Part of the name.
        #[arg(long)]
        text: Option<String>,
    },
    /// A customer with its branches, contacts, projects and contracts.
    Show {
        /// Id or name.
        customer: String,
    },
}

#[derive(Subcommand)]
pub enum BranchesCommand {
    /// Record a branch of a customer.
    Add {
        /// The customer, by id or name.
        #[arg(long)]
        customer: String,
        /// Its name, unique within the customer.
        #[arg(long)]
        name: String,
        /// The address that receives notices and reports.
        #[arg(long)]
        email: String,
        /// Its IANA time zone, like Europe/Berlin.
        #[arg(long)]
        timezone: String,
        /// The service region it belongs to.
        #[arg(long)]
        region: Option<String>,
        /// Its postal address.
        #[arg(long)]
        address: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum ContactsCommand {
    /// Record a contact: an email or a phone (or both), each one contact's.
    Add {
        /// The customer, by id or name.
        #[arg(long)]
        customer: String,
        /// The contact's branch, by id or name; none for the whole customer.
        #[arg(long)]
        branch: Option<String>,
        /// The contact's name.
        #[arg(long)]
        name: String,
        /// The address they write from.
        #[arg(long)]
        email: Option<String>,
        /// The number they call from, any format (stored in E.164).
        #[arg(long)]
        phone: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum ProjectsCommand {
    /// Record an installation at a branch.
    Add {
        /// The customer, by id or name.
        #[arg(long)]
        customer: String,
        /// The branch, by id or name.
        #[arg(long)]
        branch: String,
        /// Its name, unique within the customer.
        #[arg(long)]
        name: String,
        /// The acceptance date (YYYY-MM-DD): the warranty starts then.
        #[arg(long)]
        accepted: String,
        /// Months of warranty from acceptance.
        #[arg(long, default_value_t = 12)]
        warranty_months: i32,
        /// Latitude of the site (with --lng).
        #[arg(long, requires = "lng", allow_negative_numbers = true)]
        lat: Option<f64>,
        /// Longitude of the site (with --lat).
        #[arg(long, requires = "lat", allow_negative_numbers = true)]
        lng: Option<f64>,
        /// Its IANA time zone; the branch's when left out.
        #[arg(long)]
        timezone: Option<String>,
    },
    /// Move a project's acceptance date; every warranty date follows.
    Accept {
        /// The project, by id or name.
        project: String,
        /// The new acceptance date (YYYY-MM-DD).
        #[arg(long)]
        on: String,
    },
}

#[derive(Subcommand)]
pub enum AssetsCommand {
    /// Record a device in a project.
    Add {
        /// The project, by id or name.
        #[arg(long)]
        project: String,
        /// Its model, from the catalogue.
        #[arg(long)]
        model: String,
        /// The model's family (camera, nvr, ptz, ...): adds a new model to the catalogue.
        #[arg(long)]
        family: Option<String>,
        /// Its serial number, unique across all customers.
        #[arg(long)]
        serial: String,
        /// Its product price, like 1234.50.
        #[arg(long)]
        price: String,
        /// The price's ISO currency code, like EUR.
        #[arg(long)]
        currency: String,
        /// The firmware version installed.
        #[arg(long)]
        firmware: Option<String>,
    },
    /// One asset with its warranty and coverage.
    Show {
        /// Its serial number.
        serial: String,
        /// The day to tell coverage for (YYYY-MM-DD); today by default.
        #[arg(long)]
        on: Option<String>,
    },
}

#[derive(Args)]
#[group(required = true, multiple = true)]
pub struct Covered {
    /// Projects (ids or names, comma-separated): the assets they have now.
    #[arg(long, value_delimiter = ',')]
    projects: Vec<String>,
    /// Serials of assets (comma-separated).
    #[arg(long, value_delimiter = ',')]
    assets: Vec<String>,
}

#[derive(Subcommand)]
pub enum ContractsCommand {
    /// Record a maintenance contract; refused over 5% of the covered price a year.
    Add {
        /// The customer, by id or name.
        #[arg(long)]
        customer: String,
        #[command(flatten)]
        covered: Covered,
        /// The first day covered (YYYY-MM-DD).
        #[arg(long)]
        start: String,
        /// The last day covered (YYYY-MM-DD): whole calendar months from --start.
        #[arg(long)]
        end: String,
        /// The fee for the term, like 99.00 (for a 12-month term, the annual fee).
        #[arg(long)]
        annual_fee: String,
        /// The fee's ISO currency code, like EUR.
        #[arg(long)]
        currency: String,
    },
    /// Contracts, soonest ending first.
    List {
        /// Of this customer (id or name).
        #[arg(long)]
        customer: Option<String>,
        /// Only those ending within this long from today, like 60d.
        #[arg(long, value_parser = parse_duration)]
        expiring: Option<Duration>,
    },
    /// Add or remove covered assets; refused when the rest breaks the cap.
    Cover {
        /// The contract's id.
        contract: String,
        /// Serials to add (comma-separated).
        #[arg(long, value_delimiter = ',')]
        add: Vec<String>,
        /// Serials to remove (comma-separated).
        #[arg(long, value_delimiter = ',')]
        remove: Vec<String>,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct EntitlementKey {
    /// The caller's number, any format.
    #[arg(long)]
    phone: Option<String>,
    /// The sender's address.
    #[arg(long)]
    email: Option<String>,
    /// A device's serial number.
    #[arg(long)]
    serial: Option<String>,
}

#[derive(Args)]
pub struct EntitlementArgs {
    #[command(flatten)]
    key: EntitlementKey,
    /// The day to tell coverage for (YYYY-MM-DD); today by default.
    #[arg(long)]
    on: Option<String>,
}

fn customer_json(customer: &pb::Customer) -> Value {
    json!({
        "id": customer.id,
        "name": customer.name,
        "email": optional(&customer.email),
        "phone": optional(&customer.phone),
    })
}

fn branch_json(branch: &pb::Branch) -> Value {
    json!({
        "id": branch.id,
        "customer_id": branch.customer_id,
        "name": branch.name,
        "address": optional(&branch.address),
        "timezone": branch.time_zone,
        "region": optional(&branch.region),
        "email": branch.notice_email,
    })
}

fn contact_json(contact: &pb::Contact) -> Value {
    json!({
        "id": contact.id,
        "customer_id": contact.customer_id,
        "branch_id": optional(&contact.branch_id),
        "name": contact.name,
        "email": optional(&contact.email),
        "phone": optional(&contact.phone),
    })
}

fn project_json(project: &pb::Project) -> Value {
    json!({
        "id": project.id,
        "name": project.name,
        "customer": project.customer,
        "customer_id": project.customer_id,
        "branch_id": project.branch_id,
        "lat": project.lat,
        "lng": project.lng,
        "timezone": project.time_zone,
        "accepted_on": project.accepted_on,
        "warranty_months": project.warranty_months,
        "warranty_until": project.warranty_until,
    })
}

fn coverage_name(value: i32) -> &'static str {
    match pb::Coverage::try_from(value) {
        Ok(pb::Coverage::Warranty) => "warranty",
        Ok(pb::Coverage::Contract) => "contract",
        _ => "none",
    }
}

fn asset_json(asset: &pb::Asset) -> Value {
    json!({
        "id": asset.id,
        "serial": asset.serial,
        "model": asset.model,
        "family": asset.family,
        "project": asset.project,
        "project_id": asset.project_id,
        "customer": asset.customer,
        "price": asset.price,
        "currency": asset.currency,
        "firmware": optional(&asset.firmware),
        "warranty_until": asset.warranty_until,
        "coverage": coverage_name(asset.coverage),
        "covered_until": optional(&asset.covered_until),
        "contract_id": optional(&asset.contract_id),
        "reason": asset.reason,
        "on": asset.on,
    })
}

fn asset_line(asset: &pb::Asset) -> String {
    format!(
        "{}\t{}\t{} {}\t{}: {}",
        asset.serial,
        asset.model,
        asset.price,
        asset.currency,
        coverage_name(asset.coverage),
        asset.reason
    )
}

fn contract_json(contract: &pb::Contract) -> Value {
    json!({
        "id": contract.id,
        "customer": contract.customer,
        "customer_id": contract.customer_id,
        "start": contract.start,
        "end": contract.end,
        "term_months": contract.term_months,
        "fee": contract.fee,
        "currency": contract.currency,
        "assets": contract.serials,
        "covered_price": contract.covered_price,
        "max_fee": contract.max_fee,
    })
}

fn contract_line(contract: &pb::Contract) -> String {
    format!(
        "{}\t{}\t{} to {}\t{} {} (at most {})\t{}",
        contract.id,
        contract.customer,
        contract.start,
        contract.end,
        contract.fee,
        contract.currency,
        contract.max_fee,
        contract.serials.join(",")
    )
}

fn lines<T>(items: &[T], line: impl Fn(&T) -> String) -> String {
    if items.is_empty() {
        return "none".into();
    }
    items.iter().map(line).collect::<Vec<_>>().join("\n")
}

pub async fn run(command: Command, output: &Output) -> Result<(), Failure> {
    let mut client = ContractsServiceClient::new(connect()?);
    match command {
        Command::Customers(CustomersCommand::Add { name, email, phone }) => {
            let customer = client
                .create_customer(pb::CreateCustomerRequest {
                    name,
                    email: email.unwrap_or_default(),
                    phone: phone.unwrap_or_default(),
                })
                .await?
                .into_inner();
            output.print(customer_json(&customer), || {
                format!("{}\t{}", customer.id, customer.name)
            });
        }
        Command::Customers(CustomersCommand::List { text }) => {
            let found = client
                .list_customers(pb::ListCustomersRequest {
                    text: text.unwrap_or_default(),
                    limit: 500,
                })
                .await?
                .into_inner();
            output.print(
                json!(
                    found
                        .customers
                        .iter()
                        .map(customer_json)
                        .collect::<Vec<_>>()
                ),
                || lines(&found.customers, |c| format!("{}\t{}", c.id, c.name)),
            );
        }
        Command::Customers(CustomersCommand::Show { customer }) => {
            let detail = client
                .get_customer(pb::GetCustomerRequest { customer })
                .await?
                .into_inner();
            let customer = detail.customer.unwrap_or_default();
            let mut value = customer_json(&customer);
            value["branches"] = json!(detail.branches.iter().map(branch_json).collect::<Vec<_>>());
            value["contacts"] = json!(detail.contacts.iter().map(contact_json).collect::<Vec<_>>());
            value["projects"] = json!(detail.projects.iter().map(project_json).collect::<Vec<_>>());
            value["contracts"] = json!(
                detail
                    .contracts
                    .iter()
                    .map(contract_json)
                    .collect::<Vec<_>>()
            );
            output.print(value, || {
                let mut text = format!("{}\t{}", customer.id, customer.name);
                for b in &detail.branches {
                    text += &format!("\nbranch\t{}\t{}\t{}", b.name, b.time_zone, b.notice_email);
                }
                for c in &detail.contacts {
                    text += &format!("\ncontact\t{}\t{}\t{}", c.name, c.email, c.phone);
                }
                for p in &detail.projects {
                    text += &format!(
                        "\nproject\t{}\taccepted {}\twarranty until {}",
                        p.name, p.accepted_on, p.warranty_until
                    );
                }
                for c in &detail.contracts {
                    text += &format!("\ncontract\t{}", contract_line(c));
                }
                text
            });
        }
        Command::Branches(BranchesCommand::Add {
            customer,
            name,
            email,
            timezone,
            region,
            address,
        }) => {
            let branch = client
                .add_branch(pb::AddBranchRequest {
                    customer,
                    name,
                    address: address.unwrap_or_default(),
                    time_zone: timezone,
                    region: region.unwrap_or_default(),
                    notice_email: email,
                })
                .await?
                .into_inner();
            output.print(branch_json(&branch), || {
                format!("{}\t{}", branch.id, branch.name)
            });
        }
        Command::Contacts(ContactsCommand::Add {
            customer,
            branch,
            name,
            email,
            phone,
        }) => {
            let contact = client
                .add_contact(pb::AddContactRequest {
                    customer,
                    branch: branch.unwrap_or_default(),
                    name,
                    email: email.unwrap_or_default(),
                    phone: phone.unwrap_or_default(),
                })
                .await?
                .into_inner();
            output.print(contact_json(&contact), || {
                format!("{}\t{}", contact.id, contact.name)
            });
        }
        Command::Projects(ProjectsCommand::Add {
            customer,
            branch,
            name,
            accepted,
            warranty_months,
            lat,
            lng,
            timezone,
        }) => {
            let project = client
                .add_project(pb::AddProjectRequest {
                    customer,
                    branch,
                    name,
                    lat,
                    lng,
                    time_zone: timezone.unwrap_or_default(),
                    accepted_on: accepted,
                    warranty_months,
                })
                .await?
                .into_inner();
            output.print(project_json(&project), || {
                format!(
                    "{}\t{}\twarranty until {}",
                    project.id, project.name, project.warranty_until
                )
            });
        }
        Command::Projects(ProjectsCommand::Accept { project, on }) => {
            let project = client
                .accept_project(pb::AcceptProjectRequest {
                    project,
                    accepted_on: on,
                })
                .await?
                .into_inner();
            output.print(project_json(&project), || {
                format!(
                    "{} accepted {}: warranty until {}",
                    project.name, project.accepted_on, project.warranty_until
                )
            });
        }
        Command::Assets(AssetsCommand::Add {
            project,
            model,
            family,
            serial,
            price,
            currency,
            firmware,
        }) => {
            let asset = client
                .add_asset(pb::AddAssetRequest {
                    project,
                    model,
                    family: family.unwrap_or_default(),
                    serial,
                    price,
                    currency,
                    firmware: firmware.unwrap_or_default(),
                })
                .await?
                .into_inner();
            output.print(asset_json(&asset), || asset_line(&asset));
        }
        Command::Assets(AssetsCommand::Show { serial, on }) => {
            let asset = client
                .get_asset(pb::GetAssetRequest {
                    serial,
                    on: on.unwrap_or_default(),
                })
                .await?
                .into_inner();
            output.print(asset_json(&asset), || asset_line(&asset));
        }
        Command::Contracts(ContractsCommand::Add {
            customer,
            covered,
            start,
            end,
            annual_fee,
            currency,
        }) => {
            let contract = client
                .create_contract(pb::CreateContractRequest {
                    customer,
                    projects: covered.projects,
                    serials: covered.assets,
                    start,
                    end,
                    fee: annual_fee,
                    currency,
                })
                .await?
                .into_inner();
            output.print(contract_json(&contract), || contract_line(&contract));
        }
        Command::Contracts(ContractsCommand::List { customer, expiring }) => {
            let days = expiring.map_or(0, |d| d.as_secs().div_ceil(86_400));
            let found = client
                .list_contracts(pb::ListContractsRequest {
                    customer: customer.unwrap_or_default(),
                    expiring_within_days: u32::try_from(days).unwrap_or(u32::MAX),
                })
                .await?
                .into_inner();
            output.print(
                json!(
                    found
                        .contracts
                        .iter()
                        .map(contract_json)
                        .collect::<Vec<_>>()
                ),
                || lines(&found.contracts, contract_line),
            );
        }
        Command::Contracts(ContractsCommand::Cover {
            contract,
            add,
            remove,
        }) => {
            let contract = client
                .change_coverage(pb::ChangeCoverageRequest {
                    contract,
                    add_serials: add,
                    remove_serials: remove,
                })
                .await?
                .into_inner();
            output.print(contract_json(&contract), || contract_line(&contract));
        }
        Command::Entitlement(EntitlementArgs { key, on }) => {
            let key = match (key.phone, key.email, key.serial) {
                (Some(phone), _, _) => Key::Phone(phone),
                (_, Some(email), _) => Key::Email(email),
                (_, _, Some(serial)) => Key::Serial(serial),
                (None, None, None) => {
                    return Err(anyhow::anyhow!("give --phone, --email or --serial").into());
                }
            };
            let answer = client
                .entitlement(pb::EntitlementRequest {
                    key: Some(key),
                    on: on.unwrap_or_default(),
                })
                .await?
                .into_inner();
            let outcome = match pb::Match::try_from(answer.r#match) {
                Ok(pb::Match::Found) => "found",
                Ok(pb::Match::Ambiguous) => "ambiguous",
                _ => "unknown",
            };
            output.print(
                json!({
                    "match": outcome,
                    "customer": answer.customer.as_ref().map(customer_json),
                    "branch": answer.branch.as_ref().map(branch_json),
                    "contact": answer.contact.as_ref().map(contact_json),
                    "project": answer.project.as_ref().map(project_json),
                    "assets": answer.assets.iter().map(asset_json).collect::<Vec<_>>(),
                    "coverage": coverage_name(answer.coverage),
                    "covered_until": optional(&answer.covered_until),
                    "reason": answer.reason,
                    "candidates": answer.candidates.iter().map(|c| json!({
                        "customer_id": c.customer_id,
                        "customer": c.customer,
                        "via": c.via,
                    })).collect::<Vec<_>>(),
                }),
                || {
                    let mut text = match &answer.customer {
                        Some(c) if answer.covered_until.is_empty() => {
                            format!("{}: not covered\n{}", c.name, answer.reason)
                        }
                        Some(c) => format!(
                            "{}: {} until {}\n{}",
                            c.name,
                            coverage_name(answer.coverage),
                            answer.covered_until,
                            answer.reason
                        ),
                        None => format!("{outcome}: {}", answer.reason),
                    };
                    for c in &answer.candidates {
                        text += &format!("\n{}\t{}\t{}", c.customer_id, c.customer, c.via);
                    }
                    text
                },
            );
        }
    }
    Ok(())
}
