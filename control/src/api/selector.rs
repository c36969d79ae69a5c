//! Kubernetes label and field selectors.
//!
//! [`LabelSelector`] implements the full label selector grammar of
//! `k8s.io/apimachinery/pkg/labels` (equality, set-based, existence and the numeric `gt`/`lt`
//! operators), and [`from_label_selector`] converts a `metav1.LabelSelector` JSON object
//! (`matchLabels` + `matchExpressions`) into the same representation so controllers share one
//! matching implementation.
//!
//! [`FieldSelector`] implements `k8s.io/apimachinery/pkg/fields` (`field=value`, `field==value`,
//! `field!=value` with `\,` `\=` `\\` escapes). The selectable fields of each kind are described
//! by [`field_value`] and [`is_supported`], which mirror the `ToSelectableFields` functions of the
//! Kubernetes registry.
//!
//! Error messages follow Kubernetes' wording so clients see familiar text.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

/// Maximum length of a label value and of the name part of a label key.
const LABEL_MAX_LEN: usize = 63;
/// Maximum length of the DNS subdomain prefix of a label key.
const DNS1123_SUBDOMAIN_MAX_LEN: usize = 253;

const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const BINARY_OPERATORS: &str = "in, notin, =, ==, !=, gt, lt";

/// Errors produced while parsing or validating label and field selectors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A single label selector requirement could not be parsed or validated.
    #[error("unable to parse requirement: {0}")]
    Requirement(Box<SelectorError>),
    /// The label selector string has a syntax error between requirements.
    #[error("{0}")]
    Syntax(String),
    /// A label key is not a valid qualified name.
    #[error("invalid label key {key:?}: {detail}")]
    InvalidKey {
        /// The offending key.
        key: String,
        /// Why the key is invalid.
        detail: String,
    },
    /// A label value is not a valid label value.
    #[error("invalid label value: {value:?}: at key: {key:?}: {detail}")]
    InvalidValue {
        /// The key the value belongs to.
        key: String,
        /// The offending value.
        value: String,
        /// Why the value is invalid.
        detail: String,
    },
    /// The values of a requirement do not fit its operator.
    #[error("{0}")]
    InvalidRequirement(String),
    /// A `matchExpressions` entry uses an unknown operator.
    #[error("{0:?} is not a valid label selector operator")]
    InvalidOperator(String),
    /// A `metav1.LabelSelector` JSON document has the wrong shape.
    #[error("invalid label selector: {0}")]
    InvalidLabelSelector(String),
    /// A field selector term has no recognised operator.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    InvalidFieldTerm {
        /// The whole selector string.
        selector: String,
        /// The term that could not be understood.
        term: String,
    },
    /// A field selector value contains an unknown escape sequence.
    #[error("invalid field selector: invalid escape sequence: {0}")]
    InvalidEscape(String),
    /// A field selector value contains an unescaped `,` or `=`.
    #[error("invalid field selector: unescaped character in value: {0}")]
    UnescapedChar(char),
    /// The field is not selectable for the kind.
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
}

// ---------------------------------------------------------------------------------------------
// Label validation
// ---------------------------------------------------------------------------------------------

/// Returns true for the characters allowed at both ends of a qualified name or label value.
fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// Matches `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn is_qualified_name_shape(s: &str) -> bool {
    let (Some(first), Some(last)) = (s.chars().next(), s.chars().last()) else {
        return false;
    };
    is_alnum(first) && is_alnum(last) && s.chars().all(|c| is_alnum(c) || matches!(c, '-' | '_' | '.'))
}

/// Matches one RFC 1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn is_dns1123_label_shape(s: &str) -> bool {
    let lower_alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let (Some(first), Some(last)) = (s.chars().next(), s.chars().last()) else {
        return false;
    };
    lower_alnum(first) && lower_alnum(last) && s.chars().all(|c| lower_alnum(c) || c == '-')
}

/// Validates an RFC 1123 subdomain, returning Kubernetes' error messages.
fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX_LEN {
        errs.push(format!("must be no more than {DNS1123_SUBDOMAIN_MAX_LEN} characters"));
    }
    if !s.split('.').all(is_dns1123_label_shape) {
        errs.push(DNS1123_SUBDOMAIN_ERR.to_string());
    }
    errs
}

/// Validates a qualified name (`[prefix/]name`), as `validation.IsQualifiedName` does.
fn qualified_name_errors(key: &str) -> Vec<String> {
    let parts: Vec<&str> = key.split('/').collect();
    let mut errs = Vec::new();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(dns1123_subdomain_errors(prefix).into_iter().map(|m| format!("prefix part {m}")));
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {QUALIFIED_NAME_ERR} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )]
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > LABEL_MAX_LEN {
        errs.push(format!("name part must be no more than {LABEL_MAX_LEN} characters"));
    }
    if !is_qualified_name_shape(name) {
        errs.push(format!("name part {QUALIFIED_NAME_ERR}"));
    }
    errs
}

/// Validates a label value, as `validation.IsValidLabelValue` does.
fn label_value_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > LABEL_MAX_LEN {
        errs.push(format!("must be no more than {LABEL_MAX_LEN} characters"));
    }
    if !value.is_empty() && !is_qualified_name_shape(value) {
        errs.push(LABEL_VALUE_ERR.to_string());
    }
    errs
}

/// Checks that `key` is a valid label key (optional DNS subdomain prefix, then a name).
pub fn validate_label_key(key: &str) -> Result<(), SelectorError> {
    let errs = qualified_name_errors(key);
    if errs.is_empty() {
        return Ok(());
    }
    Err(SelectorError::InvalidKey { key: key.to_string(), detail: errs.join("; ") })
}

/// Checks that `value` is a valid label value (at most 63 characters, alphanumeric at both ends,
/// `-_.` inside; may be empty). `key` is only used in the error message.
pub fn validate_label_value(key: &str, value: &str) -> Result<(), SelectorError> {
    let errs = label_value_errors(value);
    if errs.is_empty() {
        return Ok(());
    }
    Err(SelectorError::InvalidValue { key: key.to_string(), value: value.to_string(), detail: errs.join("; ") })
}

// ---------------------------------------------------------------------------------------------
// Requirements
// ---------------------------------------------------------------------------------------------

/// The operator of one label selector requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `key in (a,b)`: the label is present and has one of the values.
    In,
    /// `key notin (a,b)`: the label is absent or has none of the values.
    NotIn,
    /// `key=value`.
    Equals,
    /// `key==value` (same meaning as `=`).
    DoubleEquals,
    /// `key!=value`: the label is absent or differs.
    NotEquals,
    /// `key`: the label is present.
    Exists,
    /// `!key`: the label is absent.
    DoesNotExist,
    /// `key>n`: the label is an integer greater than `n`.
    GreaterThan,
    /// `key<n`: the label is an integer less than `n`.
    LessThan,
}

/// One term of a label selector, such as `tier in (web,api)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: BTreeSet<String>,
}

impl Requirement {
    /// Builds and validates a requirement, as `labels.NewRequirement` does.
    pub fn new(key: &str, operator: Operator, values: BTreeSet<String>) -> Result<Self, SelectorError> {
        validate_label_key(key)?;
        check_value_count(operator, &values)?;
        for value in &values {
            validate_label_value(key, value)?;
        }
        Ok(Requirement { key: key.to_string(), operator, values })
    }

    /// The label key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values (sorted; empty for `Exists`/`DoesNotExist`).
    pub fn values(&self) -> &BTreeSet<String> {
        &self.values
    }

    /// Whether a label set satisfies this requirement.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        self.matches_label(labels.get(&self.key).and_then(Value::as_str))
    }

    /// Whether a label's value (`None` when the object lacks the label) satisfies this
    /// requirement.
    pub fn matches_label(&self, label: Option<&str>) -> bool {
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => label.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn | Operator::NotEquals => label.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => label.is_some(),
            Operator::DoesNotExist => label.is_none(),
            Operator::GreaterThan | Operator::LessThan => self.matches_numeric(label),
        }
    }

    /// Evaluates `gt`/`lt`: both sides must parse as 64-bit integers.
    fn matches_numeric(&self, label: Option<&str>) -> bool {
        let Some(have) = label.and_then(|v| v.parse::<i64>().ok()) else {
            return false;
        };
        let Some(want) = self.values.iter().next().and_then(|v| v.parse::<i64>().ok()) else {
            return false;
        };
        if self.operator == Operator::GreaterThan {
            have > want
        } else {
            have < want
        }
    }
}

/// Checks the number (and, for `gt`/`lt`, the form) of values an operator takes.
fn check_value_count(operator: Operator, values: &BTreeSet<String>) -> Result<(), SelectorError> {
    let invalid = |msg: &str| Err(SelectorError::InvalidRequirement(msg.to_string()));
    match operator {
        Operator::In | Operator::NotIn if values.is_empty() => {
            invalid("for 'in', 'notin' operators, values set can't be empty")
        }
        Operator::Equals | Operator::DoubleEquals | Operator::NotEquals if values.len() != 1 => {
            invalid("exact-match compatibility requires one single value")
        }
        Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
            invalid("values set must be empty for exists and does not exist")
        }
        Operator::GreaterThan | Operator::LessThan if values.len() != 1 => {
            invalid("for 'Gt', 'Lt' operators, exactly one value is required")
        }
        Operator::GreaterThan | Operator::LessThan if values.iter().any(|v| v.parse::<i64>().is_err()) => {
            invalid("for 'Gt', 'Lt' operators, the value must be an integer")
        }
        _ => Ok(()),
    }
}

impl fmt::Display for Requirement {
    /// Formats the requirement in the canonical Kubernetes form (`a in (x,y)`, `!a`, `a!=b`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.operator {
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
        };
        f.write_str(op)?;
        let values = self.values.iter().map(String::as_str).collect::<Vec<_>>().join(",");
        if matches!(self.operator, Operator::In | Operator::NotIn) {
            write!(f, "({values})")
        } else {
            f.write_str(&values)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Label selector
// ---------------------------------------------------------------------------------------------

/// A parsed label selector: a conjunction of [`Requirement`]s.
///
/// The empty selector matches everything. [`LabelSelector::nothing`] (what a `null`
/// `metav1.LabelSelector` converts to) matches no object at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    nothing: bool,
}

impl LabelSelector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// The selector that matches no object.
    pub fn nothing() -> Self {
        LabelSelector { requirements: Vec::new(), nothing: true }
    }

    /// Parses a label selector string such as `app=web,tier in (fe,be),!canary,gen>2`.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let mut parser = Parser { tokens: lex(selector), pos: 0 };
        let requirements = parser.parse()?;
        Ok(Self::from_requirements(requirements))
    }

    /// Builds an equality-based selector from a `key: value` map (`matchLabels`, or a Service's
    /// `spec.selector`). Values must be strings.
    pub fn from_match_labels(labels: &Map<String, Value>) -> Result<Self, SelectorError> {
        let requirements =
            labels.iter().map(|(key, value)| equals_requirement(key, value)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_requirements(requirements))
    }

    /// Sorts requirements by key (stable), as Kubernetes does, and wraps them.
    fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        LabelSelector { requirements, nothing: false }
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// True when the selector places no constraint (matches everything).
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// True for the selector that matches nothing.
    pub fn is_nothing(&self) -> bool {
        self.nothing
    }

    /// Whether the labels (an object's `metadata.labels`) satisfy every requirement.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether the labels that `label` looks up (key -> value) satisfy every requirement.
    pub fn matches_by<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches_label(label(&r.key)))
    }

    /// Whether an object's `metadata.labels` satisfy the selector (missing labels are empty).
    pub fn matches_object(&self, obj: &Value) -> bool {
        let empty = Map::new();
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object).unwrap_or(&empty);
        self.matches(labels)
    }
}

impl fmt::Display for LabelSelector {
    /// Formats the selector canonically (requirements sorted by key, joined by `,`); both the
    /// empty selector and the nothing selector format as the empty string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Builds `key=value` from a `matchLabels` entry.
fn equals_requirement(key: &str, value: &Value) -> Result<Requirement, SelectorError> {
    let Some(value) = value.as_str() else {
        return Err(SelectorError::InvalidLabelSelector(format!("matchLabels[{key:?}] must be a string")));
    };
    Requirement::new(key, Operator::Equals, BTreeSet::from([value.to_string()]))
}

/// Converts a `metav1.LabelSelector` JSON object into a [`LabelSelector`], like
/// `metav1.LabelSelectorAsSelector`.
///
/// `null` converts to [`LabelSelector::nothing`]; `{}` (no `matchLabels`, no
/// `matchExpressions`) converts to the selector matching everything. Operators `In`, `NotIn`,
/// `Exists` and `DoesNotExist` are supported.
pub fn from_label_selector(sel: &Value) -> Result<LabelSelector, SelectorError> {
    let obj = match sel {
        Value::Null => return Ok(LabelSelector::nothing()),
        Value::Object(obj) => obj,
        _ => return Err(SelectorError::InvalidLabelSelector("must be an object".into())),
    };
    let mut requirements = Vec::new();
    match obj.get("matchLabels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(labels)) => {
            for (key, value) in labels {
                requirements.push(equals_requirement(key, value)?);
            }
        }
        Some(_) => return Err(SelectorError::InvalidLabelSelector("matchLabels must be an object".into())),
    }
    match obj.get("matchExpressions") {
        None | Some(Value::Null) => {}
        Some(Value::Array(exprs)) => {
            for expr in exprs {
                requirements.push(expression_requirement(expr)?);
            }
        }
        Some(_) => return Err(SelectorError::InvalidLabelSelector("matchExpressions must be an array".into())),
    }
    Ok(LabelSelector::from_requirements(requirements))
}

/// Converts one `matchExpressions` entry (`{key, operator, values}`).
fn expression_requirement(expr: &Value) -> Result<Requirement, SelectorError> {
    let key = expr.get("key").and_then(Value::as_str).unwrap_or_default();
    let op_name = expr.get("operator").and_then(Value::as_str).unwrap_or_default();
    let operator = match op_name {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        other => return Err(SelectorError::InvalidOperator(other.to_string())),
    };
    let mut values = BTreeSet::new();
    match expr.get("values") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                let Some(v) = item.as_str() else {
                    return Err(SelectorError::InvalidLabelSelector("matchExpressions values must be strings".into()));
                };
                values.insert(v.to_string());
            }
        }
        Some(_) => return Err(SelectorError::InvalidLabelSelector("matchExpressions values must be an array".into())),
    }
    Requirement::new(key, operator, values)
}

// ---------------------------------------------------------------------------------------------
// Label selector lexer and parser (a port of k8s.io/apimachinery/pkg/labels/selector.go)
// ---------------------------------------------------------------------------------------------

/// A lexical token of the label selector grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    End,
    OpenPar,
    ClosePar,
    Comma,
    Bang,
    Equals,
    DoubleEquals,
    NotEquals,
    Greater,
    Less,
    In,
    NotIn,
    Ident(String),
}

impl Token {
    /// The source text of the token, used in error messages.
    fn literal(&self) -> &str {
        match self {
            Token::End => "",
            Token::OpenPar => "(",
            Token::ClosePar => ")",
            Token::Comma => ",",
            Token::Bang => "!",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::Greater => ">",
            Token::Less => "<",
            Token::In => "in",
            Token::NotIn => "notin",
            Token::Ident(s) => s,
        }
    }

    /// In a value context the keywords `in`/`notin` are plain identifiers.
    fn in_value_context(self) -> Token {
        match self {
            Token::In => Token::Ident("in".into()),
            Token::NotIn => Token::Ident("notin".into()),
            other => other,
        }
    }
}

/// Characters that form operator tokens and end identifiers.
fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

/// Whitespace skipped between tokens.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Splits a selector string into tokens, always ending with [`Token::End`].
fn lex(input: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut rest = input;
    loop {
        rest = rest.trim_start_matches(is_space);
        let Some(c) = rest.chars().next() else {
            tokens.push(Token::End);
            return tokens;
        };
        let (token, len) = if is_special(c) { lex_symbol(rest) } else { lex_identifier(rest) };
        tokens.push(token);
        rest = &rest[len..];
    }
}

/// Lexes an operator symbol at the start of `s` (longest match).
fn lex_symbol(s: &str) -> (Token, usize) {
    if s.starts_with("==") {
        return (Token::DoubleEquals, 2);
    }
    if s.starts_with("!=") {
        return (Token::NotEquals, 2);
    }
    let token = match s.as_bytes().first() {
        Some(b'=') => Token::Equals,
        Some(b'!') => Token::Bang,
        Some(b'(') => Token::OpenPar,
        Some(b')') => Token::ClosePar,
        Some(b',') => Token::Comma,
        Some(b'>') => Token::Greater,
        _ => Token::Less,
    };
    (token, 1)
}

/// Lexes an identifier or keyword at the start of `s`.
fn lex_identifier(s: &str) -> (Token, usize) {
    let len = s.find(|c: char| is_space(c) || is_special(c)).unwrap_or(s.len());
    let word = &s[..len];
    let token = match word {
        "in" => Token::In,
        "notin" => Token::NotIn,
        _ => Token::Ident(word.to_string()),
    };
    (token, len)
}

/// Recursive-descent parser over the token list.
struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    /// The next token without consuming it; `values` treats keywords as identifiers.
    fn peek(&self, values: bool) -> Token {
        let token = self.tokens.get(self.pos).cloned().unwrap_or(Token::End);
        if values {
            token.in_value_context()
        } else {
            token
        }
    }

    /// Consumes and returns the next token.
    fn next(&mut self, values: bool) -> Token {
        let token = self.peek(values);
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        token
    }

    /// Parses the whole selector: requirements separated by commas.
    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            match self.peek(true) {
                Token::Ident(_) | Token::Bang => {
                    let requirement = self.parse_requirement().map_err(|e| SelectorError::Requirement(Box::new(e)))?;
                    requirements.push(requirement);
                    match self.next(true) {
                        Token::End => return Ok(requirements),
                        Token::Comma => {
                            let after = self.peek(true);
                            if !matches!(after, Token::Ident(_) | Token::Bang) {
                                return Err(syntax(format!(
                                    "found '{}', expected: identifier after ','",
                                    after.literal()
                                )));
                            }
                        }
                        other => {
                            return Err(syntax(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                other.literal()
                            )))
                        }
                    }
                }
                Token::End => return Ok(requirements),
                other => {
                    return Err(syntax(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        other.literal()
                    )))
                }
            }
        }
    }

    /// Parses `key`, `!key`, `key op value` or `key op (values)`.
    fn parse_requirement(&mut self) -> Result<Requirement, SelectorError> {
        let (key, inferred) = self.parse_key_and_infer_operator()?;
        if let Some(operator) = inferred {
            return Requirement::new(&key, operator, BTreeSet::new());
        }
        let operator = self.parse_operator()?;
        let values = match operator {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new(&key, operator, values)
    }

    /// Parses the key; returns `Exists`/`DoesNotExist` when no binary operator follows.
    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), SelectorError> {
        let mut token = self.next(true);
        let negated = token == Token::Bang;
        if negated {
            token = self.next(true);
        }
        let Token::Ident(key) = token else {
            return Err(syntax(format!("found '{}', expected: identifier", token.literal())));
        };
        validate_label_key(&key)?;
        if negated {
            return Ok((key, Some(Operator::DoesNotExist)));
        }
        if matches!(self.peek(true), Token::End | Token::Comma) {
            return Ok((key, Some(Operator::Exists)));
        }
        Ok((key, None))
    }

    /// Parses a binary operator.
    fn parse_operator(&mut self) -> Result<Operator, SelectorError> {
        match self.next(false) {
            Token::In => Ok(Operator::In),
            Token::NotIn => Ok(Operator::NotIn),
            Token::Equals => Ok(Operator::Equals),
            Token::DoubleEquals => Ok(Operator::DoubleEquals),
            Token::NotEquals => Ok(Operator::NotEquals),
            Token::Greater => Ok(Operator::GreaterThan),
            Token::Less => Ok(Operator::LessThan),
            other => Err(syntax(format!("found '{}', expected: {BINARY_OPERATORS}", other.literal()))),
        }
    }

    /// Parses `(v1,v2,...)`; `()` yields the single empty value.
    fn parse_values(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        let open = self.next(true);
        if open != Token::OpenPar {
            return Err(syntax(format!("found '{}' expected: '('", open.literal())));
        }
        match self.peek(true) {
            Token::Ident(_) | Token::Comma => {
                let values = self.parse_identifiers_list()?;
                let close = self.next(true);
                if close != Token::ClosePar {
                    return Err(syntax(format!("found '{}', expected: ')'", close.literal())));
                }
                Ok(values)
            }
            Token::ClosePar => {
                self.next(true);
                Ok(BTreeSet::from([String::new()]))
            }
            other => Err(syntax(format!("found '{}', expected: ',', ')' or identifier", other.literal()))),
        }
    }

    /// Parses the comma-separated values inside parentheses (empty entries are the empty value).
    fn parse_identifiers_list(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        let mut values = BTreeSet::new();
        loop {
            match self.next(true) {
                Token::Ident(value) => {
                    values.insert(value);
                    match self.peek(true) {
                        Token::Comma => continue,
                        Token::ClosePar => return Ok(values),
                        other => return Err(syntax(format!("found '{}', expected: ',' or ')'", other.literal()))),
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        values.insert(String::new());
                    }
                    match self.peek(true) {
                        Token::ClosePar => {
                            values.insert(String::new());
                            return Ok(values);
                        }
                        Token::Comma => {
                            self.next(true);
                            values.insert(String::new());
                        }
                        _ => {}
                    }
                }
                other => return Err(syntax(format!("found '{}', expected: ',', or identifier", other.literal()))),
            }
        }
    }

    /// Parses the single value after `=`, `==`, `!=`, `>` or `<` (may be empty).
    fn parse_exact_value(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        if matches!(self.peek(true), Token::End | Token::Comma) {
            return Ok(BTreeSet::from([String::new()]));
        }
        match self.next(true) {
            Token::Ident(value) => Ok(BTreeSet::from([value])),
            other => Err(syntax(format!("found '{}', expected: identifier", other.literal()))),
        }
    }
}

/// Shorthand for a syntax error.
fn syntax(msg: String) -> SelectorError {
    SelectorError::Syntax(msg)
}

// ---------------------------------------------------------------------------------------------
// Field selector
// ---------------------------------------------------------------------------------------------

/// One `field=value` / `field!=value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldTerm {
    field: String,
    value: String,
    negate: bool,
}

/// A parsed field selector: a conjunction of equality / inequality terms on object fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parses a field selector such as `status.phase=Running,spec.nodeName!=`.
    ///
    /// Values may contain the escapes `\,`, `\=` and `\\`; an unescaped `,` splits terms and an
    /// unescaped `=` in a value is an error, as in Kubernetes.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let mut parts = split_terms(selector);
        parts.sort_unstable();
        let mut terms = Vec::new();
        for part in parts.into_iter().filter(|p| !p.is_empty()) {
            let Some((field, op, raw)) = split_term(part) else {
                return Err(SelectorError::InvalidFieldTerm { selector: selector.into(), term: part.into() });
            };
            let value = unescape_value(raw)?;
            terms.push(FieldTerm { field: field.to_string(), value, negate: op == "!=" });
        }
        Ok(FieldSelector { terms })
    }

    /// True when the selector has no terms (matches everything).
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The field names referenced by the selector, in term order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(|t| t.field.as_str())
    }

    /// Returns the value required by a `field=value` term, if any (e.g. to turn
    /// `metadata.name=foo` into a point lookup).
    pub fn exact_match(&self, field: &str) -> Option<&str> {
        self.terms.iter().find(|t| t.field == field && !t.negate).map(|t| t.value.as_str())
    }

    /// Rejects fields that `kind` cannot be selected on, with Kubernetes' message
    /// `field label not supported: <field>`.
    pub fn validate(&self, kind: &str) -> Result<(), SelectorError> {
        match self.fields().find(|f| !is_supported(kind, f)) {
            Some(field) => Err(SelectorError::UnsupportedField(field.to_string())),
            None => Ok(()),
        }
    }

    /// Whether the object satisfies every term; the kind is taken from the object's `kind`.
    pub fn matches(&self, obj: &Value) -> bool {
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
        self.matches_kind(kind, obj)
    }

    /// Whether the object, known to be of `kind`, satisfies every term. Missing fields compare
    /// as the empty string.
    pub fn matches_kind(&self, kind: &str, obj: &Value) -> bool {
        self.matches_by(|field| field_value(kind, obj, field))
    }

    /// Whether every term holds for the field values `value` gives (`None` compares as the
    /// empty string): for kinds whose selectable fields are not built in (custom resources).
    pub fn matches_by(&self, value: impl Fn(&str) -> Option<String>) -> bool {
        self.terms.iter().all(|t| {
            let have = value(&t.field).unwrap_or_default();
            (have == t.value) != t.negate
        })
    }
}

impl fmt::Display for FieldSelector {
    /// Formats the selector with values re-escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = if t.negate { "!=" } else { "=" };
            write!(f, "{}{op}{}", t.field, escape_value(&t.value))?;
        }
        Ok(())
    }
}

/// Splits on commas not preceded by a backslash (escapes are kept for [`unescape_value`]).
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in selector.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&selector[start..i]);
            start = i + 1;
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// Splits a term at the first operator (`!=`, `==` or `=`), returning `(field, op, raw value)`.
fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for op in ["!=", "==", "="] {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], op, value));
            }
        }
    }
    None
}

/// Resolves `\\`, `\,` and `\=` in a field selector value.
fn unescape_value(raw: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(raw.len());
    let mut in_slash = false;
    for c in raw.chars() {
        if in_slash {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(SelectorError::InvalidEscape(format!("\\{c}")));
            }
            out.push(c);
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => return Err(SelectorError::UnescapedChar(c)),
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err(SelectorError::InvalidEscape("\\".into()));
    }
    Ok(out)
}

/// Escapes `\`, `,` and `=` in a field selector value.
fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Selectable fields per kind
// ---------------------------------------------------------------------------------------------

const POD_FIELDS: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];

/// Event fields in core/v1 spelling.
const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

/// Event fields in events.k8s.io/v1 spelling.
const EVENTS_V1_FIELDS: &[&str] = &[
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "regarding.apiVersion",
    "regarding.resourceVersion",
    "regarding.fieldPath",
    "reportingController",
];

/// The kind-specific selectable fields (besides `metadata.name` / `metadata.namespace`).
fn kind_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => POD_FIELDS,
        "Event" => EVENT_FIELDS,
        "Secret" => &["type"],
        "Namespace" => &["status.phase", "name"],
        "Node" => &["spec.unschedulable"],
        "ReplicaSet" | "ReplicationController" => &["status.replicas"],
        "Job" => &["status.successful"],
        "Service" => &["spec.clusterIP", "spec.type"],
        "CertificateSigningRequest" => &["spec.signerName"],
        _ => &[],
    }
}

/// Whether `field` can be used in a field selector on objects of `kind`.
///
/// Every kind supports `metadata.name` and `metadata.namespace`; the rest mirrors the Kubernetes
/// registry (e.g. Pod `spec.nodeName`, Event `involvedObject.name`, Secret `type`).
pub fn is_supported(kind: &str, field: &str) -> bool {
    matches!(field, "metadata.name" | "metadata.namespace")
        || kind_fields(kind).contains(&field)
        || (kind == "Event" && EVENTS_V1_FIELDS.contains(&field))
}

/// Extracts the value of a selectable field from an object's JSON, as Kubernetes'
/// `ToSelectableFields` would render it (booleans as `true`/`false`, counters as decimal).
///
/// Returns `None` for unsupported fields and for string fields absent from the object; callers
/// compare `None` as the empty string. Events may be core/v1 (`involvedObject`) or
/// events.k8s.io/v1 (`regarding`) shaped, and either field spelling is accepted.
pub fn field_value(kind: &str, obj: &Value, field: &str) -> Option<String> {
    match field {
        "metadata.name" => return string_at(obj, "/metadata/name"),
        "metadata.namespace" => return string_at(obj, "/metadata/namespace"),
        _ => {}
    }
    if !is_supported(kind, field) {
        return None;
    }
    match kind {
        "Pod" => pod_field(obj, field),
        "Event" => event_field(obj, field),
        "Secret" => string_at(obj, "/type"),
        "Namespace" if field == "name" => string_at(obj, "/metadata/name"),
        "Namespace" => string_at(obj, "/status/phase"),
        "Node" => Some(bool_at(obj, "/spec/unschedulable").to_string()),
        "ReplicaSet" | "ReplicationController" => Some(int_at(obj, "/status/replicas").to_string()),
        "Job" => Some(int_at(obj, "/status/succeeded").to_string()),
        "Service" if field == "spec.type" => string_at(obj, "/spec/type"),
        "Service" => string_at(obj, "/spec/clusterIP"),
        "CertificateSigningRequest" => string_at(obj, "/spec/signerName"),
        _ => None,
    }
}

/// Pod selectable fields.
fn pod_field(obj: &Value, field: &str) -> Option<String> {
    match field {
        "spec.hostNetwork" => Some(bool_at(obj, "/spec/hostNetwork").to_string()),
        "status.podIP" => string_at(obj, "/status/podIPs/0/ip").or_else(|| string_at(obj, "/status/podIP")),
        _ => string_at(obj, &format!("/{}", field.replace('.', "/"))),
    }
}

/// Event selectable fields, for both the core/v1 and events.k8s.io/v1 shapes.
fn event_field(obj: &Value, field: &str) -> Option<String> {
    let reference = obj.get("involvedObject").or_else(|| obj.get("regarding"));
    let ref_field = field.strip_prefix("involvedObject.").or_else(|| field.strip_prefix("regarding."));
    if let Some(name) = ref_field {
        return reference.and_then(|r| r.get(name)).and_then(Value::as_str).map(str::to_string);
    }
    let reporting = || string_at(obj, "/reportingComponent").or_else(|| string_at(obj, "/reportingController"));
    match field {
        "reportingComponent" | "reportingController" => reporting(),
        "source" => string_at(obj, "/source/component")
            .or_else(|| string_at(obj, "/deprecatedSource/component"))
            .filter(|s| !s.is_empty())
            .or_else(reporting),
        "reason" => string_at(obj, "/reason"),
        "type" => string_at(obj, "/type"),
        _ => None,
    }
}

/// A string at a JSON pointer.
fn string_at(obj: &Value, pointer: &str) -> Option<String> {
    obj.pointer(pointer).and_then(Value::as_str).map(str::to_string)
}

/// A boolean at a JSON pointer, defaulting to false.
fn bool_at(obj: &Value, pointer: &str) -> bool {
    obj.pointer(pointer).and_then(Value::as_bool).unwrap_or(false)
}

/// An integer at a JSON pointer, defaulting to 0.
fn int_at(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// An object's labels held compactly (a sorted boxed slice, about a tenth of a
/// `serde_json::Map`'s 630-byte node for a few labels): for caches that keep many objects' labels
/// to match selectors against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels(Box<[(Box<str>, Box<str>)]>);

impl Labels {
    /// `metadata.labels` of `obj` (values that are not strings are left out, as no label is).
    pub fn of(obj: &Value) -> Self {
        let mut labels: Vec<(Box<str>, Box<str>)> = obj
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|m| m.iter().filter_map(|(k, v)| Some((k.as_str().into(), v.as_str()?.into()))).collect())
            .unwrap_or_default();
        labels.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Self(labels.into_boxed_slice())
    }

    /// One label's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.binary_search_by(|(k, _)| k.as_ref().cmp(key)).ok().map(|i| self.0[i].1.as_ref())
    }

    /// Whether `selector` matches these labels.
    pub fn matched_by(&self, selector: &LabelSelector) -> bool {
        selector.matches_by(|key| self.get(key))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn err(s: &str) -> String {
        LabelSelector::parse(s).expect_err(s).to_string()
    }

    #[test]
    fn empty_selector_matches_everything() {
        let s = sel("");
        assert!(s.is_empty());
        assert!(s.matches(&Map::new()));
        assert!(s.matches(&labels(json!({"a": "b"}))));
        assert!(sel("   ").is_empty());
        assert_eq!(s.to_string(), "");
    }

    #[test]
    fn equality_operators() {
        let l = labels(json!({"app": "web", "tier": "fe"}));
        assert!(sel("app=web").matches(&l));
        assert!(sel("app==web").matches(&l));
        assert!(!sel("app=db").matches(&l));
        assert!(sel("app!=db").matches(&l));
        assert!(!sel("app!=web").matches(&l));
        assert!(sel("missing!=x").matches(&l), "!= matches absent labels");
        assert!(!sel("missing=x").matches(&l));
        assert!(sel("app=web,tier=fe").matches(&l));
        assert!(!sel("app=web,tier=be").matches(&l));
    }

    #[test]
    fn empty_value_equality() {
        let l = labels(json!({"a": ""}));
        assert!(sel("a=").matches(&l));
        assert!(sel("a=,b!=").matches(&l));
        assert!(!sel("a=").matches(&Map::new()));
    }

    #[test]
    fn set_operators() {
        let l = labels(json!({"env": "prod"}));
        assert!(sel("env in (prod,staging)").matches(&l));
        assert!(sel("env in (prod)").matches(&l));
        assert!(!sel("env in (dev,staging)").matches(&l));
        assert!(sel("env notin (dev,staging)").matches(&l));
        assert!(!sel("env notin (prod)").matches(&l));
        assert!(sel("other notin (x)").matches(&l), "notin matches absent labels");
        assert!(!sel("other in (x)").matches(&l));
        // whitespace tolerance
        assert!(sel("  env   in   ( prod , staging )  ").matches(&l));
        assert!(sel("env in(prod)").matches(&l));
        // empty entries mean the empty value
        let e = sel("env in (,x)");
        assert_eq!(
            e.requirements()[0].values().iter().cloned().collect::<Vec<_>>(),
            vec!["".to_string(), "x".to_string()]
        );
        assert_eq!(sel("env in ()").requirements()[0].values().len(), 1);
        // keywords are values inside parentheses
        assert!(sel("x in (in,notin)").matches(&labels(json!({"x": "notin"}))));
    }

    #[test]
    fn existence_operators() {
        let l = labels(json!({"app": "web"}));
        assert!(sel("app").matches(&l));
        assert!(!sel("db").matches(&l));
        assert!(sel("!db").matches(&l));
        assert!(!sel("!app").matches(&l));
        assert!(sel("app,!db").matches(&l));
        assert!(sel(" ! db ").matches(&l));
    }

    #[test]
    fn numeric_operators() {
        let l = labels(json!({"gen": "5", "word": "abc"}));
        assert!(sel("gen>4").matches(&l));
        assert!(!sel("gen>5").matches(&l));
        assert!(sel("gen<6").matches(&l));
        assert!(sel("gen > 0").matches(&l));
        assert!(err("gen > -1").contains("invalid label value"), "values are label values");
        assert!(!sel("gen<5").matches(&l));
        assert!(!sel("word>1").matches(&l), "non-numeric label never matches");
        assert!(!sel("missing<100").matches(&l));
        assert_eq!(err("gen>x"), "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer");
    }

    #[test]
    fn prefixed_keys() {
        let l = labels(json!({"app.kubernetes.io/name": "nginx"}));
        assert!(sel("app.kubernetes.io/name=nginx").matches(&l));
        assert!(sel("app.kubernetes.io/name in (nginx, apache)").matches(&l));
        assert!(LabelSelector::parse("Bad.Prefix/name=x").is_err());
        assert!(LabelSelector::parse("/name=x").is_err());
        assert!(LabelSelector::parse("a/b/c=x").is_err());
        assert!(LabelSelector::parse("example.com/").is_err());
    }

    #[test]
    fn display_is_canonical_and_sorted() {
        assert_eq!(sel("b in (z,y), a=1, !c, d").to_string(), "a=1,b in (y,z),!c,d");
        assert_eq!(sel("x notin (a),y>3,z==q,w!=v").to_string(), "w!=v,x notin (a),y>3,z==q");
    }

    #[test]
    fn parse_errors() {
        assert_eq!(err("a in ("), "unable to parse requirement: found '', expected: ',', ')' or identifier");
        assert_eq!(err("=x"), "found '=', expected: !, identifier, or 'end of string'");
        assert_eq!(err("a in (x"), "unable to parse requirement: found '', expected: ',' or ')'");
        assert_eq!(err("a in x"), "unable to parse requirement: found 'x' expected: '('");
        assert_eq!(err("a b"), "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt");
        assert_eq!(err("a=b c"), "found 'c', expected: ',' or 'end of string'");
        assert_eq!(err("a=b,"), "found '', expected: identifier after ','");
        assert_eq!(err("a=b,,c"), "found ',', expected: identifier after ','");
        assert_eq!(err("a=(b)"), "unable to parse requirement: found '(', expected: identifier");
        assert_eq!(err("!"), "unable to parse requirement: found '', expected: identifier");
        assert!(err("a=b=c").starts_with("found '=', expected"));
    }

    #[test]
    fn bad_label_values_and_keys() {
        let e = err("a=-bad");
        assert!(
            e.starts_with("unable to parse requirement: invalid label value: \"-bad\": at key: \"a\": a valid label"),
            "{e}"
        );
        let long = "x".repeat(64);
        let e = err(&format!("a={long}"));
        assert!(e.contains("must be no more than 63 characters"), "{e}");
        assert!(LabelSelector::parse(&format!("a={}", "x".repeat(63))).is_ok());
        assert!(err("a in (ok,bad!)").contains("expected"));
        assert!(err("a in (ok,-bad)").contains("invalid label value"));
        let e = err("-a=b");
        assert!(e.starts_with("unable to parse requirement: invalid label key \"-a\": name part must consist"), "{e}");
        assert!(LabelSelector::parse("a_b.c-d=v_1.2-3").is_ok());
    }

    #[test]
    fn from_label_selector_converts_metav1() {
        let s = from_label_selector(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["fe", "be"]},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                {"key": "team", "operator": "Exists"},
                {"key": "canary", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        assert_eq!(s.to_string(), "app=web,!canary,env notin (dev),team,tier in (be,fe)");
        assert!(s.matches(&labels(json!({"app": "web", "tier": "fe", "team": "x"}))));
        assert!(!s.matches(&labels(json!({"app": "web", "tier": "fe", "team": "x", "canary": "1"}))));
        assert!(!s.matches(&labels(json!({"app": "web", "tier": "fe", "team": "x", "env": "dev"}))));
        assert!(!s.matches(&labels(json!({"app": "web", "tier": "fe"}))));

        let everything = from_label_selector(&json!({})).unwrap();
        assert!(everything.is_empty() && everything.matches(&Map::new()));
        let nothing = from_label_selector(&Value::Null).unwrap();
        assert!(nothing.is_nothing() && !nothing.matches(&Map::new()));

        assert_eq!(
            from_label_selector(&json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}))
                .unwrap_err()
                .to_string(),
            "\"Gt\" is not a valid label selector operator"
        );
        assert!(
            from_label_selector(&json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]})).is_err()
        );
        assert!(from_label_selector(
            &json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]})
        )
        .is_err());
        assert!(from_label_selector(&json!({"matchLabels": {"a": "-x"}})).is_err());
        assert!(from_label_selector(&json!({"matchLabels": {"a": 1}})).is_err());
        assert!(from_label_selector(&json!({"matchLabels": []})).is_err());
        assert!(from_label_selector(&json!("app=web")).is_err());
    }

    #[test]
    fn from_match_labels_and_objects() {
        let s = LabelSelector::from_match_labels(&labels(json!({"app": "web"}))).unwrap();
        assert!(s.matches_object(&json!({"metadata": {"labels": {"app": "web", "x": "y"}}})));
        assert!(!s.matches_object(&json!({"metadata": {}})));
        assert!(sel("!app").matches_object(&json!({})));
        assert!(sel("").matches_object(&json!(null)));
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "default"},
            "spec": {"nodeName": "node-a", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                     "serviceAccountName": "default"},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}]}
        })
    }

    #[test]
    fn field_selector_on_pods() {
        let p = pod();
        let m = |s: &str| FieldSelector::parse(s).unwrap().matches(&p);
        assert!(m("metadata.name=web-1"));
        assert!(m("metadata.namespace==default"));
        assert!(m("spec.nodeName=node-a,status.phase=Running"));
        assert!(!m("spec.nodeName=node-b"));
        assert!(m("spec.nodeName!=node-b"));
        assert!(!m("spec.nodeName="), "scheduled pod is not selected by spec.nodeName=");
        assert!(m("status.podIP=10.0.0.5"));
        assert!(m("spec.hostNetwork=false"));
        assert!(m("status.nominatedNodeName="));
        assert!(m(""));

        let unscheduled = json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {}, "status": {"phase": "Pending"}});
        let s = FieldSelector::parse("spec.nodeName=").unwrap();
        assert!(s.matches(&unscheduled));
        assert!(s.matches_kind("Pod", &json!({"metadata": {"name": "p"}})));
        assert!(FieldSelector::parse("spec.hostNetwork=true")
            .unwrap()
            .matches(&json!({"kind": "Pod", "spec": {"hostNetwork": true}})));
    }

    #[test]
    fn field_selector_on_events() {
        let core = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web-1.17a", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default", "uid": "u-1",
                               "apiVersion": "v1", "fieldPath": "spec.containers{app}"},
            "reason": "Pulled", "type": "Normal", "source": {"component": "kubelet", "host": "node-a"},
            "reportingComponent": "kubelet"
        });
        let m = |s: &str, obj: &Value| FieldSelector::parse(s).unwrap().matches(obj);
        assert!(m("involvedObject.kind=Pod,involvedObject.name=web-1", &core));
        assert!(m("involvedObject.uid=u-1,reason=Pulled,type=Normal", &core));
        assert!(m("involvedObject.fieldPath=spec.containers{app}", &core));
        assert!(m("source=kubelet,reportingComponent=kubelet", &core));
        assert!(m("type!=Warning", &core));
        assert!(m("involvedObject.resourceVersion=", &core));
        assert!(!m("involvedObject.name=web-2", &core));

        let v1 = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"},
            "regarding": {"kind": "Node", "name": "node-a"},
            "reason": "Starting", "type": "Normal", "reportingController": "kubelet"
        });
        assert!(m("regarding.kind=Node,regarding.name=node-a", &v1));
        assert!(m("involvedObject.name=node-a", &v1));
        assert!(m("reportingController=kubelet,source=kubelet", &v1));
        assert!(m("regarding.name=web-1", &core));
    }

    #[test]
    fn field_selector_other_kinds() {
        let secret = json!({"kind": "Secret", "metadata": {"name": "s"}, "type": "kubernetes.io/tls"});
        assert!(FieldSelector::parse("type=kubernetes.io/tls").unwrap().matches(&secret));
        let node = json!({"kind": "Node", "metadata": {"name": "n"}, "spec": {}});
        assert!(FieldSelector::parse("spec.unschedulable=false").unwrap().matches(&node));
        let ns = json!({"kind": "Namespace", "metadata": {"name": "kube-system"}, "status": {"phase": "Active"}});
        assert!(FieldSelector::parse("status.phase=Active,metadata.name=kube-system").unwrap().matches(&ns));
        let rs = json!({"kind": "ReplicaSet", "metadata": {"name": "r"}, "status": {"replicas": 3}});
        assert!(FieldSelector::parse("status.replicas=3").unwrap().matches(&rs));
        assert!(FieldSelector::parse("status.replicas=0").unwrap().matches(&json!({"kind": "ReplicaSet"})));
        let job = json!({"kind": "Job", "status": {"succeeded": 1}});
        assert!(FieldSelector::parse("status.successful=1").unwrap().matches(&job));
    }

    #[test]
    fn field_selector_escapes_and_errors() {
        let obj = json!({"kind": "ConfigMap", "metadata": {"name": "a,b=c\\d"}});
        let s = FieldSelector::parse(r"metadata.name=a\,b\=c\\d").unwrap();
        assert!(s.matches(&obj));
        assert_eq!(s.to_string(), r"metadata.name=a\,b\=c\\d");
        assert_eq!(s.exact_match("metadata.name"), Some("a,b=c\\d"));

        assert_eq!(
            FieldSelector::parse("metadata.name").unwrap_err().to_string(),
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
        );
        assert_eq!(
            FieldSelector::parse(r"metadata.name=a\x").unwrap_err().to_string(),
            r"invalid field selector: invalid escape sequence: \x"
        );
        assert_eq!(
            FieldSelector::parse("metadata.name=a=b").unwrap_err().to_string(),
            "invalid field selector: unescaped character in value: ="
        );
        assert!(FieldSelector::parse(r"metadata.name=a\").is_err());
        assert!(FieldSelector::parse(",,").unwrap().is_empty());
    }

    #[test]
    fn field_support() {
        assert!(is_supported("Pod", "spec.nodeName"));
        assert!(is_supported("ConfigMap", "metadata.name"));
        assert!(is_supported("Event", "involvedObject.name"));
        assert!(is_supported("Event", "regarding.name"));
        assert!(!is_supported("ConfigMap", "data.x"));
        assert!(!is_supported("Deployment", "status.replicas"));
        let s = FieldSelector::parse("metadata.name=x,spec.foo=bar").unwrap();
        assert_eq!(s.validate("Pod").unwrap_err().to_string(), "field label not supported: spec.foo");
        assert!(FieldSelector::parse("spec.nodeName=x").unwrap().validate("Pod").is_ok());
        assert_eq!(field_value("ConfigMap", &json!({"data": {"x": "1"}}), "data.x"), None);
    }
}
