//! The modules of the fleet and which of them a process runs.

use hotline_kit::supervisor::Module;

/// Every module, `--target all`.
pub fn modules() -> Vec<Module> {
    vec![
        hotline_tickets::module(),
        hotline_sla::module(),
        hotline_pager::module(),
        hotline_intake::module(),
        hotline_contracts::module(),
        hotline_dispatch::module(),
    ]
}

/// The modules named by a `--target` value: `all`, or a comma list.
pub fn select(target: &str) -> anyhow::Result<Vec<Module>> {
    let all = modules();
    let mut selected = Vec::new();
    for name in target.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if name == "all" {
            return Ok(all);
        }
        let module = all.iter().find(|m| m.name == name).ok_or_else(|| {
            let known: Vec<_> = all.iter().map(|m| m.name).collect();
            anyhow::anyhow!("unknown target {name:?} (known: all, {})", known.join(", "))
        })?;
        if !selected.iter().any(|m: &Module| m.name == name) {
            selected.push(*module);
        }
    }
    anyhow::ensure!(!selected.is_empty(), "--target names no module");
    Ok(selected)
}

/// How a process running `modules` names itself in traces (unless
/// `OTEL_SERVICE_NAME` says otherwise): `hotline` for the whole fleet,
/// `hotline-sla` for `--target sla`, `hotline-tickets-sla` for two.
pub fn service_name(modules: &[Module]) -> String {
    if modules.len() == self::modules().len() {
        return "hotline".into();
    }
    let names: Vec<&str> = modules.iter().map(|m| m.name).collect();
    format!("hotline-{}", names.join("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_select_modules_by_name() {
        assert_eq!(select("all").unwrap().len(), modules().len());
        assert_eq!(select("tickets").unwrap()[0].name, "tickets");
        assert_eq!(select("tickets,tickets").unwrap().len(), 1);
        assert!(
            select("nonsense")
                .err()
                .unwrap()
                .to_string()
                .contains("unknown target")
        );
        assert!(select("").is_err());
    }

    #[test]
    fn a_process_is_named_in_traces_by_what_it_runs() {
        assert_eq!(service_name(&select("all").unwrap()), "hotline");
        assert_eq!(service_name(&select("sla").unwrap()), "hotline-sla");
        assert_eq!(
            service_name(&select("tickets, sla").unwrap()),
            "hotline-tickets-sla"
        );
    }
}
