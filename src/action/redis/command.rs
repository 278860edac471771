//! Any command, as the escape hatch.

use super::*;

input! {
    redis:
    pub struct CommandInput {
        /// The command and its arguments, e.g. ["CONFIG", "SET", "maxmemory", "2gb"].
        pub args: Vec<Value>,
    }
}

/// A command's reply.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Reply {
    /// The reply as JSON (strings, numbers, lists, maps, null).
    pub reply: Value,
}

/// The command's words as Redis receives them: strings as they are, numbers and the rest as JSON.
fn words(args: &[Value]) -> Vec<String> {
    args.iter()
        .map(|a| a.as_str().map_or_else(|| a.to_string(), str::to_string))
        .collect()
}

action! {
    /// Any Redis command (escape hatch): a write, not idempotent.
    Command(CommandInput) -> Reply = Spec::change("redis", "command").timeout(30)
}

impl Action for Command {
    fn describe(input: &CommandInput) -> String {
        let words = words(&input.args);
        format!("{} on {}", words.join(" "), target(&input.url, &input.name))
    }

    fn predict(_: &CommandInput) -> Reply {
        Reply {
            reply: Value::String("OK".into()),
        }
    }

    async fn run(input: CommandInput, cx: Cx) -> Result<Reply, ActionError> {
        if input.args.is_empty() {
            return Err(ActionError::permanent(
                "`args` is empty: give the command and its arguments",
            ));
        }
        let (mut conn, target) = connect_new(&input.url, &input.name, &cx).await?;
        let words = words(&input.args);
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        let reply = query(&mut conn, &target, &refs).await?;
        Ok(Reply {
            reply: to_json(&reply),
        })
    }
}
