//! `sh -c "LIST"` and an interactive `sh`: lists of toolbox commands joined by `;`, `&&` and `||`,
//! words quoted with `'`, `"` or `\`. Not a shell: pipes, redirections, variables, globs and
//! subshells are refused with exit 2 and a message saying so.

use super::{Io, World};

/// One piece of a command list.
#[derive(Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    /// `;` or a newline: run the next command whatever this one's exit.
    Then,
    And,
    Or,
}

/// Why a line cannot be run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
enum SyntaxError {
    #[error("sh: syntax error: unterminated quoted string")]
    Unterminated,
    #[error(
        "sh: `{0}` is not supported (the Wasm toolbox runs simple `;`, `&&`, `||` command lists, not a full shell)"
    )]
    Unsupported(char),
    #[error("sh: syntax error near unexpected token `{0}'")]
    Unexpected(String),
}

/// Characters a shell would give a meaning the toolbox does not have.
const UNSUPPORTED: &[char] = &['|', '&', '>', '<', '$', '`', '(', ')', '*', '?', '{', '}', '~'];

fn tokenize(line: &str) -> Result<Vec<Token>, SyntaxError> {
    let mut tokens = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if let Some(w) = word.take() {
                    tokens.push(Token::Word(w));
                }
            }
            '#' if word.is_none() => break,
            ';' | '\n' | '\r' => {
                if let Some(w) = word.take() {
                    tokens.push(Token::Word(w));
                }
                tokens.push(Token::Then);
            }
            '&' | '|' if chars.peek() == Some(&c) => {
                chars.next();
                if let Some(w) = word.take() {
                    tokens.push(Token::Word(w));
                }
                tokens.push(if c == '&' { Token::And } else { Token::Or });
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => w.push(ch),
                        None => return Err(SyntaxError::Unterminated),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(ch @ ('"' | '\\')) => w.push(ch),
                            Some(ch) => {
                                w.push('\\');
                                w.push(ch);
                            }
                            None => return Err(SyntaxError::Unterminated),
                        },
                        Some(ch @ ('$' | '`')) => return Err(SyntaxError::Unsupported(ch)),
                        Some(ch) => w.push(ch),
                        None => return Err(SyntaxError::Unterminated),
                    }
                }
            }
            '\\' => {
                if let Some(ch) = chars.next() {
                    word.get_or_insert_with(String::new).push(ch);
                }
            }
            c if UNSUPPORTED.contains(&c) => return Err(SyntaxError::Unsupported(c)),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(w) = word {
        tokens.push(Token::Word(w));
    }
    Ok(tokens)
}

/// Runs one line; the exit of its last command run.
fn run_line(world: &World, line: &str, last: i32, io: &mut Io<'_>) -> Result<i32, SyntaxError> {
    let tokens = tokenize(line)?;
    // Checked in full before anything runs, as a shell parses before it executes.
    let mut previous_op = true;
    for t in &tokens {
        match t {
            Token::Word(_) => previous_op = false,
            Token::And | Token::Or if previous_op => return Err(SyntaxError::Unexpected(op(t).into())),
            _ => previous_op = true,
        }
    }
    if matches!(tokens.last(), Some(Token::And | Token::Or)) {
        return Err(SyntaxError::Unexpected("newline".into()));
    }
    let mut code = last;
    let mut argv: Vec<String> = Vec::new();
    let mut skip = false;
    for token in tokens.into_iter().chain(std::iter::once(Token::Then)) {
        if let Token::Word(w) = token {
            argv.push(w);
            continue;
        }
        if !argv.is_empty() && !skip {
            code = if argv.first().is_some_and(|c| super::is_builtin(c)) {
                super::run(world, &argv, io)
            } else {
                io.warn(&format!("sh: {}: not found", argv.first().map(String::as_str).unwrap_or_default()));
                super::NOT_FOUND
            };
            if argv.first().is_some_and(|c| c == "exit") {
                return Ok(code);
            }
        }
        argv.clear();
        skip = match token {
            Token::And => code != 0,
            Token::Or => code == 0,
            _ => false,
        } && !matches!(token, Token::Then);
        if io.cancel.is_cancelled() {
            break;
        }
    }
    Ok(code)
}

fn op(t: &Token) -> &'static str {
    match t {
        Token::And => "&&",
        Token::Or => "||",
        _ => ";",
    }
}

/// `sh -c LIST [NAME ARGS...]`, or `sh [-i]` reading lines from stdin.
pub(super) fn run(world: &World, args: &[&str], io: &mut Io<'_>) -> i32 {
    match args {
        ["-c", script, ..] => match run_line(world, script, 0, io) {
            Ok(code) => code,
            Err(e) => {
                io.warn(&e.to_string());
                2
            }
        },
        [] | ["-i"] | ["-s"] => interactive(world, io),
        _ => {
            io.warn("sh: only `sh -c \"LIST\"` and an interactive `sh` are supported in a Wasm container");
            2
        }
    }
}

/// Reads lines from stdin and runs them; with a terminal, echoes what is typed and handles backspace,
/// Ctrl-C (drop the line) and Ctrl-D (leave on an empty line).
fn interactive(world: &World, io: &mut Io<'_>) -> i32 {
    let prompt = |io: &mut Io<'_>| {
        if io.tty {
            let _ = write!(io.stdout, "$ ");
            let _ = io.stdout.flush();
        }
    };
    prompt(io);
    let mut line: Vec<u8> = Vec::new();
    let mut code = 0;
    let mut buf = [0u8; 1024];
    loop {
        if io.cancel.is_cancelled() {
            return code;
        }
        let n = match io.stdin.read(&mut buf) {
            Ok(0) | Err(_) => return code,
            Ok(n) => n,
        };
        for &b in buf.get(..n).unwrap_or_default() {
            match b {
                b'\r' | b'\n' => {
                    if io.tty {
                        let _ = writeln!(io.stdout);
                    }
                    let text = String::from_utf8_lossy(&line).into_owned();
                    line.clear();
                    let exits = text.split_whitespace().next() == Some("exit");
                    code = match run_line(world, &text, code, io) {
                        Ok(c) => c,
                        Err(e) => {
                            io.warn(&e.to_string());
                            2
                        }
                    };
                    if exits {
                        return code;
                    }
                    prompt(io);
                }
                0x7f | 0x08 if io.tty => {
                    if line.pop().is_some() {
                        let _ = write!(io.stdout, "\x08 \x08");
                    }
                }
                0x03 if io.tty => {
                    line.clear();
                    let _ = writeln!(io.stdout, "^C");
                    prompt(io);
                }
                0x04 if io.tty && line.is_empty() => {
                    let _ = writeln!(io.stdout);
                    return code;
                }
                b => {
                    // A bound on one line, so a stream without newlines cannot grow it without end.
                    if line.len() < 64 * 1024 {
                        line.push(b);
                    }
                    if io.tty {
                        let _ = io.stdout.write_all(&[b]);
                    }
                }
            }
        }
        let _ = io.stdout.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<Token> {
        tokenize(line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    #[test]
    fn lists_and_quotes_are_split_like_a_shell() {
        let w = |s: &str| Token::Word(s.into());
        assert_eq!(
            words(r#"echo 'a b' "c\"d" e\ f; true && ls || false"#),
            vec![
                w("echo"),
                w("a b"),
                w("c\"d"),
                w("e f"),
                Token::Then,
                w("true"),
                Token::And,
                w("ls"),
                Token::Or,
                w("false")
            ]
        );
        assert_eq!(words("echo x # comment"), vec![w("echo"), w("x")]);
    }

    #[test]
    fn shell_features_the_toolbox_lacks_are_refused() {
        for line in ["ls | wc", "echo $HOME", "cat < f", "echo x > f", "ls *", "sleep 1 &", "echo \"$(x)\"", "'open"] {
            assert!(tokenize(line).is_err(), "{line}");
        }
    }
}
