//! What operators put in, as this database keeps it: plugins (the
//! components and which is current per name), their grants, sealed
//! secrets, saga templates (every version), and the console's login
//! sessions. Apart from the sagas' own tables in the parent module: these
//! rows change by hand, not by the runner, and none is fenced.

use super::*;

pub(super) async fn put_plugin(
    store: &PgStore,
    info: &PluginInfo,
    wasm: &[u8],
) -> StoreResult<PutPlugin> {
    let mut tx = store.pool.begin().await?;
    // One upload of a name at a time, so `previous` is exact.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('wasaga-plugin:' || $1))")
        .bind(&info.name)
        .execute(&mut *tx)
        .await?;
    let previous: Option<String> = sqlx::query_scalar(
        "SELECT digest FROM plugins WHERE name = $1 ORDER BY promoted_seq DESC LIMIT 1",
    )
    .bind(&info.name)
    .fetch_optional(&mut *tx)
    .await?;
    let inserted = sqlx::query(
        "INSERT INTO plugins (digest, name, size, wasm, created_at, promoted_seq, contract)
             VALUES ($1, $2, $3, $4, $5, nextval('plugins_promotion'), $6)
             ON CONFLICT (digest) DO NOTHING",
    )
    .bind(info.digest.as_str())
    .bind(&info.name)
    .bind(info.size as i64)
    .bind(wasm)
    .bind(info.created_at.millis())
    .bind(&info.contract)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let replaced = previous.filter(|d| d != info.digest.as_str());
    if inserted == 0 && replaced.is_some() {
        sqlx::query(
            "UPDATE plugins SET promoted_seq = nextval('plugins_promotion') WHERE digest = $1",
        )
        .bind(info.digest.as_str())
        .execute(&mut *tx)
        .await?;
    }
    let row: PluginRow = sqlx::query_as(&format!(
        "SELECT {PLUGIN_COLUMNS} FROM plugins WHERE digest = $1"
    ))
    .bind(info.digest.as_str())
    .fetch_one(&mut *tx)
    .await?;
    let result = tx.commit().await.map_err(StoreError::from);
    store.note(result)?;
    Ok(PutPlugin {
        info: row.try_into()?,
        created: inserted == 1,
        previous: replaced
            .map(|d| d.parse().map_err(|e| StoreError::Corrupt(format!("{e}"))))
            .transpose()?,
    })
}

pub(super) async fn plugin(store: &PgStore, digest: &Digest) -> StoreResult<Option<PluginInfo>> {
    let row: Option<PluginRow> = sqlx::query_as(&format!(
        "SELECT {PLUGIN_COLUMNS} FROM plugins WHERE digest = $1"
    ))
    .bind(digest.as_str())
    .fetch_optional(&store.pool)
    .await?;
    row.map(PluginInfo::try_from).transpose()
}

pub(super) async fn plugin_by_name(store: &PgStore, name: &str) -> StoreResult<Option<PluginInfo>> {
    let row: Option<PluginRow> = sqlx::query_as(&format!(
        "SELECT {PLUGIN_COLUMNS} FROM plugins WHERE name = $1 ORDER BY promoted_seq DESC LIMIT 1"
    ))
    .bind(name)
    .fetch_optional(&store.pool)
    .await?;
    row.map(PluginInfo::try_from).transpose()
}

pub(super) async fn plugin_bytes(store: &PgStore, digest: &Digest) -> StoreResult<Option<Vec<u8>>> {
    Ok(
        sqlx::query_scalar("SELECT wasm FROM plugins WHERE digest = $1")
            .bind(digest.as_str())
            .fetch_optional(&store.pool)
            .await?,
    )
}

pub(super) async fn list_plugins(store: &PgStore) -> StoreResult<Vec<PluginInfo>> {
    let rows: Vec<PluginRow> = sqlx::query_as(&format!(
        "SELECT {PLUGIN_COLUMNS} FROM plugins ORDER BY created_at DESC, seq DESC"
    ))
    .fetch_all(&store.pool)
    .await?;
    rows.into_iter().map(PluginInfo::try_from).collect()
}

pub(super) async fn delete_plugin(store: &PgStore, digest: &Digest) -> StoreResult<DeletePlugin> {
    let deleted = sqlx::query("DELETE FROM plugins WHERE digest = $1")
        .bind(digest.as_str())
        .execute(&store.pool)
        .await
        .map_err(StoreError::from);
    match deleted {
        Ok(done) if done.rows_affected() == 0 => Ok(DeletePlugin::NotFound),
        Ok(_) => Ok(DeletePlugin::Deleted),
        Err(e) if e.is_foreign_key() => {
            let pinned: Vec<String> = sqlx::query_scalar(
                "SELECT p.saga_id FROM saga_plugin_pins p JOIN saga_runs s ON s.id = p.saga_id
                     WHERE p.digest = $1 ORDER BY s.created_at LIMIT 10",
            )
            .bind(digest.as_str())
            .fetch_all(&store.pool)
            .await?;
            pinned_by(&pinned)
        }
        Err(e) => Err(e),
    }
}

pub(super) async fn grants(store: &PgStore, plugin_name: &str) -> StoreResult<Option<Grants>> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT http, secrets FROM plugin_grants WHERE plugin_name = $1")
            .bind(plugin_name)
            .fetch_optional(&store.pool)
            .await?;
    row.map(|(http, secrets)| grants_from_row(&http, &secrets))
        .transpose()
}

pub(super) async fn put_grants(
    store: &PgStore,
    plugin_name: &str,
    grants: &Grants,
    now: Timestamp,
) -> StoreResult<()> {
    let written = sqlx::query(
            "INSERT INTO plugin_grants (plugin_name, http, secrets, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (plugin_name) DO UPDATE SET
                 http = excluded.http, secrets = excluded.secrets, updated_at = excluded.updated_at",
        )
        .bind(plugin_name)
        .bind(to_json(&grants.http))
        .bind(to_json(&grants.secrets))
        .bind(now.millis())
        .execute(&store.pool)
        .await
        .map(drop)
        .map_err(StoreError::from);
    store.note(written)
}

pub(super) async fn put_template(store: &PgStore, template: &Template) -> StoreResult<PutTemplate> {
    let mut new = template.clone();
    let put = async {
        let mut tx = store.pool.begin().await?;
        // Puts of one name take turns (their versions are consecutive).
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('wasaga.template.' || $1))")
            .bind(&new.name)
            .execute(&mut *tx)
            .await?;
        let latest: Option<TemplateRow> = sqlx::query_as(&format!(
            "SELECT {TEMPLATE_COLUMNS} FROM saga_templates WHERE name = $1
                 ORDER BY version DESC LIMIT 1"
        ))
        .bind(&new.name)
        .fetch_optional(&mut *tx)
        .await?;
        let live: Option<bool> = sqlx::query_scalar(
            "SELECT deleted_at IS NULL FROM saga_templates WHERE name = $1
                 ORDER BY version DESC LIMIT 1",
        )
        .bind(&new.name)
        .fetch_optional(&mut *tx)
        .await?;
        let live = live == Some(true);
        let latest = latest.map(Template::try_from).transpose()?;
        if let Some(current) = &latest
            && live
            && same_template(current, &new)
        {
            return Ok(PutTemplate {
                template: current.clone(),
                created: false,
                changed: false,
            });
        }
        new.version = latest.map_or(1, |t| t.version + 1);
        sqlx::query(&format!(
            "INSERT INTO saga_templates ({TEMPLATE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&new.name)
        .bind(i64::from(new.version))
        .bind(&new.description)
        .bind(to_json(&new.steps))
        .bind(new.inputs_schema.as_ref().map(to_json))
        .bind(new.created_at.millis())
        .bind(&new.created_by)
        .bind(to_json(&new.concurrency))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(PutTemplate {
            template: new,
            created: !live,
            changed: true,
        })
    };
    let put = put.await;
    store.note(put)
}

pub(super) async fn template(
    store: &PgStore,
    name: &str,
    version: Option<u32>,
) -> StoreResult<Option<Template>> {
    let row: Option<TemplateRow> = sqlx::query_as(&format!(
        "SELECT {TEMPLATE_COLUMNS} FROM saga_templates
             WHERE name = $1 AND deleted_at IS NULL AND ($2::bigint IS NULL OR version = $2)
             ORDER BY version DESC LIMIT 1"
    ))
    .bind(name)
    .bind(version.map(i64::from))
    .fetch_optional(&store.pool)
    .await?;
    row.map(Template::try_from).transpose()
}

pub(super) async fn list_templates(store: &PgStore) -> StoreResult<Vec<Template>> {
    let rows: Vec<TemplateRow> = sqlx::query_as(&format!(
        "SELECT DISTINCT ON (name) {TEMPLATE_COLUMNS} FROM saga_templates
             WHERE deleted_at IS NULL ORDER BY name, version DESC"
    ))
    .fetch_all(&store.pool)
    .await?;
    rows.into_iter().map(Template::try_from).collect()
}

pub(super) async fn delete_template(
    store: &PgStore,
    name: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    let deleted = sqlx::query(
        "UPDATE saga_templates SET deleted_at = $1 WHERE name = $2 AND deleted_at IS NULL",
    )
    .bind(now.millis())
    .bind(name)
    .execute(&store.pool)
    .await
    .map(|r| r.rows_affected() > 0)
    .map_err(StoreError::from);
    store.note(deleted)
}

pub(super) async fn put_secret(store: &PgStore, s: &SealedSecret) -> StoreResult<()> {
    let written = sqlx::query(
            "INSERT INTO secrets (name, nonce, ciphertext, origins, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (name) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext,
                 origins = excluded.origins, updated_at = excluded.updated_at",
        )
        .bind(s.name.as_str())
        .bind(&s.nonce)
        .bind(&s.ciphertext)
        .bind(to_json(&s.origins))
        .bind(s.created_at.millis())
        .bind(s.updated_at.millis())
        .execute(&store.pool)
        .await
        .map(drop)
        .map_err(StoreError::from);
    store.note(written)
}

pub(super) async fn list_secrets(store: &PgStore) -> StoreResult<Vec<SecretInfo>> {
    let rows: Vec<SecretRow> = sqlx::query_as(&format!(
        "SELECT {SECRET_COLUMNS} FROM secrets ORDER BY name"
    ))
    .fetch_all(&store.pool)
    .await?;
    rows.into_iter()
        .map(|r| SealedSecret::try_from(r).map(|s| SecretInfo::from(&s)))
        .collect()
}

pub(super) async fn delete_secret(store: &PgStore, name: &SecretName) -> StoreResult<bool> {
    Ok(sqlx::query("DELETE FROM secrets WHERE name = $1")
        .bind(name.as_str())
        .execute(&store.pool)
        .await?
        .rows_affected()
        > 0)
}

pub(super) async fn put_session(
    store: &PgStore,
    s: &ConsoleSession,
    now: Timestamp,
) -> StoreResult<()> {
    let mut tx = store.pool.begin().await?;
    sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1")
        .bind(now.millis())
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO console_sessions (id_sha256, label, token_sha256, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&s.id_sha256)
    .bind(&s.label)
    .bind(&s.token_sha256)
    .bind(s.created_at.millis())
    .bind(s.expires_at.millis())
    .execute(&mut *tx)
    .await?;
    let written = tx.commit().await.map_err(StoreError::from);
    store.note(written)
}

pub(super) async fn session(
    store: &PgStore,
    id_sha256: &str,
    now: Timestamp,
) -> StoreResult<Option<ConsoleSession>> {
    let row: Option<(String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT id_sha256, label, token_sha256, created_at, expires_at
             FROM console_sessions WHERE id_sha256 = $1 AND expires_at > $2",
    )
    .bind(id_sha256)
    .bind(now.millis())
    .fetch_optional(&store.pool)
    .await?;
    Ok(row.map(ConsoleSession::from_row))
}

pub(super) async fn delete_session(store: &PgStore, id_sha256: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM console_sessions WHERE id_sha256 = $1")
        .bind(id_sha256)
        .execute(&store.pool)
        .await?;
    Ok(())
}

pub(super) async fn sealed_secrets(
    store: &PgStore,
    names: &[SecretName],
) -> StoreResult<Vec<SealedSecret>> {
    let names: Vec<&str> = names.iter().map(SecretName::as_str).collect();
    let rows: Vec<SecretRow> = sqlx::query_as(&format!(
        "SELECT {SECRET_COLUMNS} FROM secrets WHERE name = ANY($1)"
    ))
    .bind(&names)
    .fetch_all(&store.pool)
    .await?;
    rows.into_iter().map(SealedSecret::try_from).collect()
}
