//! What operators put in, as this database keeps it: plugins (the
//! components and which is current per name), their grants, sealed
//! secrets, saga templates (every version), and the console's login
//! sessions. Apart from the sagas' own tables in the parent module: these
//! rows change by hand, not by the runner, and none is fenced.

use super::*;

pub(super) async fn put_plugin(
    store: &SqliteStore,
    info: &PluginInfo,
    wasm: &[u8],
) -> StoreResult<PutPlugin> {
    let info = info.clone();
    let wasm = wasm.to_vec();
    let catalog = store.catalog.clone();
    store.writer
            .write_then(
                move |conn| {
                    let previous: Option<String> = conn
                        .prepare_cached(
                            "SELECT digest FROM plugins WHERE name = ? ORDER BY promoted_seq DESC LIMIT 1",
                        )?
                        .query_row([&info.name], |r| r.get(0))
                        .optional()?;
                    let inserted = conn
                        .prepare_cached(
                            "INSERT INTO plugins (digest, name, size, wasm, created_at, promoted_seq, contract)
                             VALUES (?, ?, ?, ?, ?, (SELECT COALESCE(MAX(promoted_seq), 0) + 1 FROM plugins), ?)
                             ON CONFLICT (digest) DO NOTHING",
                        )?
                        .execute(params![
                            info.digest.as_str(),
                            info.name,
                            info.size as i64,
                            wasm,
                            info.created_at.millis(),
                            info.contract,
                        ])?;
                    let replaced = previous.filter(|d| d != info.digest.as_str());
                    if inserted == 0 && replaced.is_some() {
                        // A re-upload of an older digest makes it current again.
                        conn.prepare_cached(
                            "UPDATE plugins SET promoted_seq = (SELECT MAX(promoted_seq) + 1 FROM plugins)
                             WHERE digest = ?",
                        )?
                        .execute([info.digest.as_str()])?;
                    }
                    let row = conn
                        .prepare_cached(&format!(
                            "SELECT {PLUGIN_COLUMNS} FROM plugins WHERE digest = ?"
                        ))?
                        .query_row([info.digest.as_str()], plugin_row)?;
                    Ok(PutPlugin {
                        info: row.try_into()?,
                        created: inserted == 1,
                        previous: replaced
                            .map(|d| d.parse().map_err(|e| StoreError::Corrupt(format!("{e}"))))
                            .transpose()?,
                    })
                },
                move || catalog.changed(),
            )
            .await
}

pub(super) async fn plugin(
    store: &SqliteStore,
    digest: &Digest,
) -> StoreResult<Option<PluginInfo>> {
    Ok(store.plugins().await?.by_digest(digest))
}

pub(super) async fn plugin_by_name(
    store: &SqliteStore,
    name: &str,
) -> StoreResult<Option<PluginInfo>> {
    Ok(store.plugins().await?.by_name(name))
}

pub(super) async fn plugin_bytes(
    store: &SqliteStore,
    digest: &Digest,
) -> StoreResult<Option<Vec<u8>>> {
    Ok(
        sqlx::query_scalar("SELECT wasm FROM plugins WHERE digest = ?")
            .bind(digest.as_str())
            .fetch_optional(&store.reads)
            .await?,
    )
}

pub(super) async fn list_plugins(store: &SqliteStore) -> StoreResult<Vec<PluginInfo>> {
    Ok(store.plugins().await?.newest_first.clone())
}

pub(super) async fn delete_plugin(
    store: &SqliteStore,
    digest: &Digest,
) -> StoreResult<DeletePlugin> {
    let digest = digest.clone();
    let catalog = store.catalog.clone();
    store.writer
            .write_then(
                move |conn| {
                    let deleted = match conn
                        .prepare_cached("DELETE FROM plugins WHERE digest = ?")?
                        .execute([digest.as_str()])
                    {
                        Ok(n) => n,
                        Err(e) if crate::store::error::sqlite_foreign_key(&e) => {
                            let pinned = conn
                                .prepare_cached(
                                    "SELECT p.saga_id FROM saga_plugin_pins p JOIN saga_runs s ON s.id = p.saga_id
                                     WHERE p.digest = ? ORDER BY s.created_at LIMIT 10",
                                )?
                                .query_map([digest.as_str()], |r| r.get::<_, String>(0))?
                                .collect::<Result<Vec<_>, _>>()?;
                            return pinned_by(&pinned);
                        }
                        Err(e) => return Err(e.into()),
                    };
                    Ok(if deleted == 0 {
                        DeletePlugin::NotFound
                    } else {
                        DeletePlugin::Deleted
                    })
                },
                move || catalog.changed(),
            )
            .await
}

pub(super) async fn grants(store: &SqliteStore, plugin_name: &str) -> StoreResult<Option<Grants>> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT http, secrets FROM plugin_grants WHERE plugin_name = ?")
            .bind(plugin_name)
            .fetch_optional(&store.reads)
            .await?;
    row.map(|(http, secrets)| grants_from_row(&http, &secrets))
        .transpose()
}

pub(super) async fn put_grants(
    store: &SqliteStore,
    plugin_name: &str,
    grants: &Grants,
    now: Timestamp,
) -> StoreResult<()> {
    let name = plugin_name.to_string();
    let (http, secrets) = (to_json(&grants.http), to_json(&grants.secrets));
    store.writer
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO plugin_grants (plugin_name, http, secrets, updated_at) VALUES (?, ?, ?, ?)
                     ON CONFLICT (plugin_name) DO UPDATE SET
                         http = excluded.http, secrets = excluded.secrets, updated_at = excluded.updated_at",
                )?
                .execute(params![name, http, secrets, now.millis()])?;
                Ok(())
            })
            .await
}

pub(super) async fn put_template(
    store: &SqliteStore,
    template: &Template,
) -> StoreResult<PutTemplate> {
    let mut new = template.clone();
    store.writer
            .write(move |conn| {
                let latest: Option<(i64, bool)> = conn
                    .prepare_cached(
                        "SELECT version, deleted_at IS NULL FROM saga_templates
                         WHERE name = ? ORDER BY version DESC LIMIT 1",
                    )?
                    .query_row([&new.name], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                if let Some((version, true)) = latest {
                    let current = conn
                        .prepare_cached(&format!(
                            "SELECT {TEMPLATE_COLUMNS} FROM saga_templates WHERE name = ? AND version = ?"
                        ))?
                        .query_row(params![new.name, version], template_row)?;
                    let current = Template::try_from(current)?;
                    if same_template(&current, &new) {
                        return Ok(PutTemplate {
                            template: current,
                            created: false,
                            changed: false,
                        });
                    }
                }
                new.version = latest.map_or(1, |(v, _)| v as u32 + 1);
                conn.prepare_cached(&format!(
                    "INSERT INTO saga_templates ({TEMPLATE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                ))?
                .execute(params![
                    new.name,
                    new.version as i64,
                    new.description,
                    to_json(&new.steps),
                    new.inputs_schema.as_ref().map(to_json),
                    new.created_at.millis(),
                    new.created_by,
                    to_json(&new.concurrency),
                ])?;
                Ok(PutTemplate {
                    template: new,
                    created: !matches!(latest, Some((_, true))),
                    changed: true,
                })
            })
            .await
}

pub(super) async fn template(
    store: &SqliteStore,
    name: &str,
    version: Option<u32>,
) -> StoreResult<Option<Template>> {
    let row: Option<TemplateRow> = sqlx::query_as(&format!(
        "SELECT {TEMPLATE_COLUMNS} FROM saga_templates
             WHERE name = ?1 AND deleted_at IS NULL AND (?2 IS NULL OR version = ?2)
             ORDER BY version DESC LIMIT 1"
    ))
    .bind(name)
    .bind(version.map(i64::from))
    .fetch_optional(&store.reads)
    .await?;
    row.map(Template::try_from).transpose()
}

pub(super) async fn list_templates(store: &SqliteStore) -> StoreResult<Vec<Template>> {
    let rows: Vec<TemplateRow> = sqlx::query_as(&format!(
        "SELECT {TEMPLATE_COLUMNS} FROM saga_templates t
             WHERE deleted_at IS NULL
               AND version = (SELECT MAX(version) FROM saga_templates l WHERE l.name = t.name)
             ORDER BY name"
    ))
    .fetch_all(&store.reads)
    .await?;
    rows.into_iter().map(Template::try_from).collect()
}

pub(super) async fn delete_template(
    store: &SqliteStore,
    name: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    let name = name.to_string();
    store.writer
            .write(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "UPDATE saga_templates SET deleted_at = ? WHERE name = ? AND deleted_at IS NULL",
                    )?
                    .execute(params![now.millis(), name])?
                    > 0)
            })
            .await
}

pub(super) async fn put_secret(store: &SqliteStore, secret: &SealedSecret) -> StoreResult<()> {
    let s = secret.clone();
    store
        .writer
        .write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO secrets (name, nonce, ciphertext, origins, created_at, updated_at)
                     VALUES (?, ?, ?, ?, ?, ?)
                     ON CONFLICT (name) DO UPDATE SET nonce = excluded.nonce,
                         ciphertext = excluded.ciphertext, origins = excluded.origins,
                         updated_at = excluded.updated_at",
            )?
            .execute(params![
                s.name.as_str(),
                s.nonce,
                s.ciphertext,
                to_json(&s.origins),
                s.created_at.millis(),
                s.updated_at.millis(),
            ])?;
            Ok(())
        })
        .await
}

pub(super) async fn list_secrets(store: &SqliteStore) -> StoreResult<Vec<SecretInfo>> {
    let rows: Vec<SecretRow> = sqlx::query_as(&format!(
        "SELECT {SECRET_COLUMNS} FROM secrets ORDER BY name"
    ))
    .fetch_all(&store.reads)
    .await?;
    rows.into_iter()
        .map(|r| SealedSecret::try_from(r).map(|s| SecretInfo::from(&s)))
        .collect()
}

pub(super) async fn delete_secret(store: &SqliteStore, name: &SecretName) -> StoreResult<bool> {
    let name = name.to_string();
    store
        .writer
        .write(move |conn| {
            Ok(conn
                .prepare_cached("DELETE FROM secrets WHERE name = ?")?
                .execute([name])?
                > 0)
        })
        .await
}

pub(super) async fn put_session(
    store: &SqliteStore,
    session: &ConsoleSession,
    now: Timestamp,
) -> StoreResult<()> {
    let s = session.clone();
    store.writer
            .write(move |conn| {
                conn.prepare_cached("DELETE FROM console_sessions WHERE expires_at <= ?")?
                    .execute([now.millis()])?;
                conn.prepare_cached(
                    "INSERT INTO console_sessions (id_sha256, label, token_sha256, created_at, expires_at)
                     VALUES (?, ?, ?, ?, ?)",
                )?
                .execute(params![
                    s.id_sha256,
                    s.label,
                    s.token_sha256,
                    s.created_at.millis(),
                    s.expires_at.millis(),
                ])?;
                Ok(())
            })
            .await
}

pub(super) async fn session(
    store: &SqliteStore,
    id_sha256: &str,
    now: Timestamp,
) -> StoreResult<Option<ConsoleSession>> {
    let row: Option<(String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT id_sha256, label, token_sha256, created_at, expires_at
             FROM console_sessions WHERE id_sha256 = ? AND expires_at > ?",
    )
    .bind(id_sha256)
    .bind(now.millis())
    .fetch_optional(&store.reads)
    .await?;
    Ok(row.map(ConsoleSession::from_row))
}

pub(super) async fn delete_session(store: &SqliteStore, id_sha256: &str) -> StoreResult<()> {
    let id = id_sha256.to_string();
    store
        .writer
        .write(move |conn| {
            conn.prepare_cached("DELETE FROM console_sessions WHERE id_sha256 = ?")?
                .execute([id])?;
            Ok(())
        })
        .await
}

pub(super) async fn sealed_secrets(
    store: &SqliteStore,
    names: &[SecretName],
) -> StoreResult<Vec<SealedSecret>> {
    let mut found = Vec::with_capacity(names.len());
    for name in names {
        let row: Option<SecretRow> = sqlx::query_as(&format!(
            "SELECT {SECRET_COLUMNS} FROM secrets WHERE name = ?"
        ))
        .bind(name.as_str())
        .fetch_optional(&store.reads)
        .await?;
        if let Some(row) = row {
            found.push(row.try_into()?);
        }
    }
    Ok(found)
}
