//! The model language's syntax tree: one type per production, one `Parse` impl each.
//!
//! ```text
//! model  := attr* vis 'struct' IDENT '{' (item ';')* '}'
//! item   := attr* ( 'input' IDENT ':' shape
//!                 | 'param' IDENT ':' shape '=' init
//!                 | 'let' IDENT '=' EXPR
//!                 | ('output' | 'loss' | 'metric') IDENT '=' EXPR
//!                 | 'optimizer' IDENT '(' args ')' )
//! shape  := '[' (dim (',' dim)* ','?)? ']'          dim := INT | IDENT
//! init   := IDENT ('(' args ')')?                   args := (arg (',' arg)* ','?)?
//! arg    := IDENT '=' EXPR | EXPR
//! ```
//!
//! Items are separated at top-level `;` before they are parsed, so that a mistake in one
//! item is reported and parsing goes on with the next: every syntax error of a model is
//! reported in one expansion, not only the first.

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{braced, bracketed, parenthesized, Attribute, Expr, Ident, LitInt, Token, Visibility};

use crate::diag::Diag;

/// The custom keywords of the model language.
#[allow(missing_docs)]
pub mod kw {
    syn::custom_keyword!(input);
    syn::custom_keyword!(param);
    syn::custom_keyword!(output);
    syn::custom_keyword!(loss);
    syn::custom_keyword!(metric);
    syn::custom_keyword!(optimizer);
}

/// A whole `model! { ... }` invocation.
pub struct ModelDef {
    /// Attributes and doc comments on the struct, kept on the generated struct.
    pub attrs: Vec<Attribute>,
    /// The struct's visibility.
    pub vis: Visibility,
    /// The struct's name.
    pub ident: Ident,
    /// The items that parsed; items that did not are reported in the `Diag`.
    pub items: Vec<Item>,
    /// The span of the braces, for errors about the whole model.
    pub brace_span: Span,
    /// Names of items that failed to parse: they are declared, so that their uses do
    /// not add "unknown name" errors to the real one.
    pub broken: Vec<Ident>,
}

/// The part of a model before its items are split: `attrs vis struct Name { tokens }`.
struct ModelShell {
    attrs: Vec<Attribute>,
    vis: Visibility,
    ident: Ident,
    body: TokenStream,
    brace_span: Span,
}

impl Parse for ModelShell {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        input.parse::<Token![struct]>().map_err(|e| {
            syn::Error::new(e.span(), "expected `struct`: a model is declared as `pub struct Name { ... }`")
        })?;
        let ident: Ident = input.parse()?;
        let content;
        let brace = braced!(content in input);
        let body: TokenStream = content.parse()?;
        if !input.is_empty() {
            return Err(
                input.error("unexpected tokens after the model's closing brace: one `model!` declares one model")
            );
        }
        Ok(ModelShell { attrs, vis, ident, body, brace_span: brace.span.join() })
    }
}

/// Rejects, before syn parses anything, tokens nested deeper than
/// [`MAX_NESTING`](crate::lower::MAX_NESTING): brackets inside brackets, or a run of
/// operator characters (`- - - x`), which syn's parser (and then the lowering) descends
/// into recursively, one stack frame or more per level. Walks with a stack of its own.
fn check_nesting(tokens: &TokenStream) -> syn::Result<()> {
    const MAX: usize = crate::lower::MAX_NESTING;
    let mut open = vec![tokens.clone().into_iter()];
    let mut run = 0usize;
    while let Some(level) = open.last_mut() {
        let Some(tree) = level.next() else {
            open.pop();
            continue;
        };
        match tree {
            TokenTree::Group(g) => {
                run = 0;
                if open.len() > MAX {
                    let msg = format!("brackets nested more than {MAX} deep: split the expression with `let`");
                    return Err(syn::Error::new(g.span_open(), msg));
                }
                open.push(g.stream().into_iter());
            }
            TokenTree::Punct(p) => {
                run += 1;
                if run > MAX {
                    let msg = format!("more than {MAX} operators in a row: split the expression with `let`");
                    return Err(syn::Error::new(p.span(), msg));
                }
            }
            TokenTree::Ident(_) | TokenTree::Literal(_) => run = 0,
        }
    }
    Ok(())
}

/// Parses a model, recording every syntax error in `diag`. Returns `None` only when the
/// outer shell (`struct Name { ... }`) itself does not parse.
pub fn parse_model(tokens: TokenStream, diag: &mut Diag) -> Option<ModelDef> {
    if let Err(e) = check_nesting(&tokens) {
        diag.push(e);
        return None;
    }
    let shell: ModelShell = match syn::parse2(tokens) {
        Ok(shell) => shell,
        Err(e) => {
            diag.push(e);
            return None;
        }
    };
    let mut items = Vec::new();
    let mut broken = Vec::new();
    for chunk in split_items(where_calls(shell.body)) {
        let last = chunk.tokens.clone().into_iter().last().map(|t| t.span());
        let mut missing_semicolons = Vec::new();
        let parsed = (|input: ParseStream| parse_items(input, &mut missing_semicolons)).parse2(chunk.tokens.clone());
        for e in missing_semicolons {
            diag.push(e);
        }
        match parsed {
            Ok(parsed) => {
                if !chunk.terminated {
                    if let Some(item) = parsed.last() {
                        diag.error(item.end_span(), "expected `;` after this item");
                    }
                }
                items.extend(parsed);
            }
            Err(e) => {
                diag.push(respan_end_of_input(e, last));
                broken.extend(broken_name(&chunk.tokens));
            }
        }
    }
    Some(ModelDef {
        attrs: shell.attrs,
        vis: shell.vis,
        ident: shell.ident,
        items,
        brace_span: shell.brace_span,
        broken,
    })
}

/// One or more items: a missing `;` between two items is reported and both are kept.
fn parse_items(input: ParseStream, missing: &mut Vec<syn::Error>) -> syn::Result<Vec<Item>> {
    let mut items = Vec::new();
    loop {
        items.push(input.parse::<Item>()?);
        if input.is_empty() {
            return Ok(items);
        }
        if starts_item(input) {
            missing.push(input.error("expected `;` before this item: every item ends with `;`"));
        } else {
            return Err(input.error("expected `;` after this item"));
        }
    }
}

fn starts_item(input: ParseStream) -> bool {
    input.peek(kw::input)
        || input.peek(kw::param)
        || input.peek(Token![let])
        || input.peek(kw::output)
        || input.peek(kw::loss)
        || input.peek(kw::metric)
        || input.peek(kw::optimizer)
        || input.peek(Token![#])
}

/// syn reports an incomplete item at the end of the input, which is the whole macro call
/// here; point at the item's last token instead.
fn respan_end_of_input(e: syn::Error, last: Option<Span>) -> syn::Error {
    let message = e.to_string();
    match (message.strip_prefix("unexpected end of input, "), last) {
        (Some(rest), Some(span)) => syn::Error::new(span, format!("this item is incomplete: {rest}")),
        _ if message == "unexpected end of input" && last.is_some() => {
            syn::Error::new(last.unwrap_or_else(Span::call_site), "this item is incomplete")
        }
        _ => e,
    }
}

/// The name a broken item was declaring, if it can be seen: `[#[..]]* KEYWORD NAME ...`.
fn broken_name(tokens: &TokenStream) -> Option<Ident> {
    let mut iter = tokens.clone().into_iter().peekable();
    while let Some(TokenTree::Punct(p)) = iter.peek() {
        if p.as_char() != '#' {
            break;
        }
        iter.next();
        iter.next();
    }
    let keyword = match iter.next()? {
        TokenTree::Ident(k) => k.to_string(),
        _ => return None,
    };
    if !["input", "param", "let", "output", "loss", "metric"].contains(&keyword.as_str()) {
        return None;
    }
    match iter.next()? {
        TokenTree::Ident(name) => Some(name),
        _ => None,
    }
}

/// `where(c, a, b)` in call position becomes the raw identifier `r#where(c, a, b)`
/// (same span): `where` is a Rust keyword, so syn would not parse it as a call, and every
/// framework spells the op so. Inside groups too; `where` followed by anything else is
/// left alone (and is a syntax error, as in Rust).
pub fn where_calls(tokens: TokenStream) -> TokenStream {
    rewrite_where(tokens).0
}

/// [`where_calls`], and whether anything changed: a group is rebuilt only if its content
/// changed, so that every other group keeps its open and close spans for messages.
fn rewrite_where(tokens: TokenStream) -> (TokenStream, bool) {
    let mut out: Vec<TokenTree> = Vec::new();
    let mut changed = false;
    let mut iter = tokens.into_iter().peekable();
    while let Some(tt) = iter.next() {
        match tt {
            TokenTree::Ident(id) if id == "where" => {
                let call = matches!(iter.peek(), Some(TokenTree::Group(g)) if g.delimiter() == proc_macro2::Delimiter::Parenthesis);
                changed |= call;
                out.push(TokenTree::Ident(if call { Ident::new_raw("where", id.span()) } else { id }));
            }
            TokenTree::Group(g) => {
                let (inner, c) = rewrite_where(g.stream());
                if c {
                    let mut group = proc_macro2::Group::new(g.delimiter(), inner);
                    group.set_span(g.span());
                    out.push(TokenTree::Group(group));
                    changed = true;
                } else {
                    out.push(TokenTree::Group(g));
                }
            }
            other => out.push(other),
        }
    }
    (out.into_iter().collect(), changed)
}

struct Chunk {
    tokens: TokenStream,
    terminated: bool,
}

/// Splits an item list at its top-level `;` (groups keep their inner `;`).
fn split_items(body: TokenStream) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    for tt in body {
        match &tt {
            TokenTree::Punct(p) if p.as_char() == ';' => {
                if current.is_empty() {
                    continue; // stray `;;` is harmless
                }
                chunks.push(Chunk { tokens: current.drain(..).collect(), terminated: true });
            }
            _ => current.push(tt),
        }
    }
    if !current.is_empty() {
        chunks.push(Chunk { tokens: current.into_iter().collect(), terminated: false });
    }
    chunks
}

/// One item of a model.
pub enum Item {
    /// `input x: [batch, 784];`
    Input(InputItem),
    /// `param w: [784, 10] = zeros;`
    Param(ParamItem),
    /// `let a = expr;`, `output p = expr;`, `loss l = expr;`, `metric m = expr;`
    Node(NodeItem),
    /// `optimizer sgd(learning_rate = 0.5);`
    Optimizer(OptimizerItem),
}

impl Item {
    fn end_span(&self) -> Span {
        match self {
            Item::Input(i) => i.shape.span,
            Item::Param(p) => p.init.name.span(),
            Item::Node(n) => n.expr.span(),
            Item::Optimizer(o) => o.paren_span,
        }
    }
}

impl Parse for Item {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        if input.peek(Ident) && !starts_item(input) && !input.peek(Token![let]) {
            let fork = input.fork();
            let word: Ident = fork.parse()?;
            let keywords = ["input", "param", "let", "output", "loss", "metric", "optimizer"];
            let hint = crate::diag::suggestion(&word.to_string(), keywords);
            return Err(syn::Error::new(
                word.span(),
                format!("expected an item (`input`, `param`, `let`, `output`, `loss`, `metric` or `optimizer`), found `{word}`{hint}"),
            ));
        }
        let lookahead = input.lookahead1();
        let item = if lookahead.peek(kw::input) {
            let kw: kw::input = input.parse()?;
            let name: Ident = input.parse()?;
            input.parse::<Token![:]>()?;
            let shape: ShapeSyntax = input.parse()?;
            let element = if input.peek(Token![as]) {
                input.parse::<Token![as]>()?;
                Some(input.parse::<Ident>()?)
            } else {
                None
            };
            reject_frozen(&attrs, "an input")?;
            Item::Input(InputItem { attrs, keyword: kw.span, name, shape, element })
        } else if lookahead.peek(kw::param) {
            let kw: kw::param = input.parse()?;
            let name: Ident = input.parse()?;
            input.parse::<Token![:]>()?;
            let shape: ShapeSyntax = input.parse()?;
            if !input.peek(Token![=]) {
                return Err(syn::Error::new(
                    shape.span,
                    "expected `= initializer` after the param's shape, e.g. `= zeros` or `= glorot_uniform`",
                ));
            }
            input.parse::<Token![=]>()?;
            let init: CallSyntax = input.parse()?;
            let (frozen, attrs) = take_frozen(attrs)?;
            Item::Param(ParamItem { attrs, frozen, keyword: kw.span, name, shape, init })
        } else if lookahead.peek(Token![let])
            || lookahead.peek(kw::output)
            || lookahead.peek(kw::loss)
            || lookahead.peek(kw::metric)
        {
            let (kind, keyword) = if input.peek(Token![let]) {
                (NodeKind::Let, input.parse::<Token![let]>()?.span)
            } else if input.peek(kw::output) {
                (NodeKind::Output, input.parse::<kw::output>()?.span)
            } else if input.peek(kw::loss) {
                (NodeKind::Loss, input.parse::<kw::loss>()?.span)
            } else {
                (NodeKind::Metric, input.parse::<kw::metric>()?.span)
            };
            let name: Ident = input.parse()?;
            if input.peek(Token![:]) {
                return Err(input.error("a node's shape is inferred: write `let name = expr;` without a type"));
            }
            input.parse::<Token![=]>()?;
            let expr: Expr = input.parse()?;
            reject_frozen(&attrs, "a node")?;
            Item::Node(NodeItem { attrs, kind, keyword, name, expr })
        } else if lookahead.peek(kw::optimizer) {
            let kw: kw::optimizer = input.parse()?;
            let kind: Ident = input.parse()?;
            let content;
            let paren = parenthesized!(content in input);
            let args = content.call(parse_args)?;
            reject_frozen(&attrs, "the optimizer")?;
            Item::Optimizer(OptimizerItem { attrs, keyword: kw.span, kind, args, paren_span: paren.span.join() })
        } else {
            return Err(lookahead.error());
        };
        Ok(item)
    }
}

fn is_frozen(attr: &Attribute) -> bool {
    attr.path().is_ident("frozen")
}

fn take_frozen(attrs: Vec<Attribute>) -> syn::Result<(bool, Vec<Attribute>)> {
    let mut frozen = false;
    let mut kept = Vec::new();
    for attr in attrs {
        if is_frozen(&attr) {
            if !matches!(attr.meta, syn::Meta::Path(_)) {
                return Err(syn::Error::new_spanned(&attr.meta, "`#[frozen]` takes no arguments"));
            }
            frozen = true;
        } else {
            kept.push(attr);
        }
    }
    Ok((frozen, kept))
}

fn reject_frozen(attrs: &[Attribute], what: &str) -> syn::Result<()> {
    match attrs.iter().find(|a| is_frozen(a)) {
        Some(a) => Err(syn::Error::new_spanned(a, format!("`#[frozen]` applies to params only, not to {what}"))),
        None => Ok(()),
    }
}

/// `input NAME: [DIMS]`
pub struct InputItem {
    /// Attributes and doc comments.
    pub attrs: Vec<Attribute>,
    /// The `input` keyword's span.
    pub keyword: Span,
    /// The input's name.
    pub name: Ident,
    /// Its declared shape.
    pub shape: ShapeSyntax,
    /// `as u32` (an index input) or `as f32`; `None` is f32.
    pub element: Option<Ident>,
}

/// `#[frozen]? param NAME: [DIMS] = INIT`
pub struct ParamItem {
    /// Attributes and doc comments (without `#[frozen]`).
    pub attrs: Vec<Attribute>,
    /// Whether `#[frozen]` was given.
    pub frozen: bool,
    /// The `param` keyword's span.
    pub keyword: Span,
    /// The param's name.
    pub name: Ident,
    /// Its declared shape.
    pub shape: ShapeSyntax,
    /// Its initializer.
    pub init: CallSyntax,
}

/// Which kind of node item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// `let`
    Let,
    /// `output`
    Output,
    /// `loss`
    Loss,
    /// `metric`
    Metric,
}

impl NodeKind {
    /// The keyword as written.
    pub fn keyword(self) -> &'static str {
        match self {
            NodeKind::Let => "let",
            NodeKind::Output => "output",
            NodeKind::Loss => "loss",
            NodeKind::Metric => "metric",
        }
    }
}

/// `let|output|loss|metric NAME = EXPR`
pub struct NodeItem {
    /// Attributes and doc comments.
    pub attrs: Vec<Attribute>,
    /// Which keyword introduced it.
    pub kind: NodeKind,
    /// The keyword's span.
    pub keyword: Span,
    /// The node's name.
    pub name: Ident,
    /// Its expression (Rust syntax; checked when lowered).
    pub expr: Expr,
}

/// `optimizer KIND(ARGS)`
pub struct OptimizerItem {
    /// Attributes (none are used yet).
    pub attrs: Vec<Attribute>,
    /// The keyword's span.
    pub keyword: Span,
    /// `sgd`, `adam`, ...
    pub kind: Ident,
    /// Its arguments.
    pub args: Vec<Arg>,
    /// The parentheses, for "missing argument" errors.
    pub paren_span: Span,
}

/// A shape as written: `[batch, 784]`.
pub struct ShapeSyntax {
    /// Its dimensions.
    pub dims: Vec<DimSyntax>,
    /// The brackets' span.
    pub span: Span,
}

/// One dimension as written.
pub enum DimSyntax {
    /// An integer literal: a static dimension.
    Static(LitInt),
    /// An identifier: a symbolic dimension bound at call time.
    Symbolic(Ident),
}

impl Parse for ShapeSyntax {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if !input.peek(syn::token::Bracket) {
            return Err(input.error("expected a shape in brackets, e.g. `[batch, 784]`"));
        }
        let content;
        let bracket = bracketed!(content in input);
        let dims = Punctuated::<DimSyntax, Token![,]>::parse_terminated(&content)?;
        Ok(ShapeSyntax { dims: dims.into_iter().collect(), span: bracket.span.join() })
    }
}

impl Parse for DimSyntax {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let lookahead = input.lookahead1();
        if lookahead.peek(LitInt) {
            Ok(DimSyntax::Static(input.parse()?))
        } else if lookahead.peek(Ident) {
            Ok(DimSyntax::Symbolic(input.parse()?))
        } else {
            Err(lookahead.error())
        }
    }
}

/// A call-like form used by initializers and optimizers: `NAME` or `NAME(ARGS)`.
pub struct CallSyntax {
    /// The name.
    pub name: Ident,
    /// The arguments; `None` when written without parentheses.
    pub args: Option<Vec<Arg>>,
    /// The span of the whole form.
    pub span: Span,
}

impl Parse for CallSyntax {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let name: Ident = input
            .parse()
            .map_err(|e| syn::Error::new(e.span(), "expected an initializer, e.g. `zeros` or `normal(std = 0.1)`"))?;
        let mut span = name.span();
        let args = if input.peek(syn::token::Paren) {
            let content;
            let paren = parenthesized!(content in input);
            span = span.join(paren.span.join()).unwrap_or(span);
            Some(content.call(parse_args)?)
        } else {
            None
        };
        Ok(CallSyntax { name, args, span })
    }
}

/// An argument: positional or `name = value`.
pub struct Arg {
    /// `Some(name)` for a named argument.
    pub name: Option<Ident>,
    /// The value.
    pub value: Expr,
}

fn parse_args(input: ParseStream) -> syn::Result<Vec<Arg>> {
    let list = Punctuated::<Expr, Token![,]>::parse_terminated(input)?;
    Ok(list.into_iter().map(arg_from_expr).collect())
}

/// Splits `name = value` (which syn parses as an assignment expression) from a
/// positional argument.
pub fn arg_from_expr(expr: Expr) -> Arg {
    if let Expr::Assign(assign) = &expr {
        if let Expr::Path(p) = &*assign.left {
            if p.attrs.is_empty() && p.qself.is_none() {
                if let Some(ident) = p.path.get_ident() {
                    return Arg { name: Some(ident.clone()), value: (*assign.right).clone() };
                }
            }
        }
    }
    Arg { name: None, value: expr }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn parse(tokens: TokenStream) -> (Option<ModelDef>, Diag) {
        let mut diag = Diag::new();
        let model = parse_model(tokens, &mut diag);
        (model, diag)
    }

    #[test]
    fn parses_the_tutorial_model() {
        let (model, diag) = parse(quote! {
            /// Doc.
            pub struct SoftmaxRegression {
                input x: [batch, 784];
                input y: [batch, 10];
                param w: [784, 10] = zeros;
                #[frozen] param b: [10] = constant(0.5);
                let a = softmax(matmul(x, w) + b);
                output probs = a;
                loss cross_entropy = mean(-sum(y * ln(a), axis = 1));
                metric accuracy = mean(argmax(a, axis = 1) == argmax(y, axis = 1));
                optimizer sgd(learning_rate = 0.5);
            }
        });
        assert!(diag.is_empty(), "{:?}", diag.messages());
        let model = model.unwrap();
        assert_eq!(model.ident, "SoftmaxRegression");
        assert_eq!(model.items.len(), 9);
        assert_eq!(model.attrs.len(), 1);
        match &model.items[3] {
            Item::Param(p) => {
                assert!(p.frozen);
                assert!(p.attrs.is_empty());
                assert_eq!(p.init.name, "constant");
                assert_eq!(p.init.args.as_ref().unwrap().len(), 1);
            }
            _ => panic!("expected a param"),
        }
        match &model.items[8] {
            Item::Optimizer(o) => {
                assert_eq!(o.kind, "sgd");
                assert_eq!(o.args[0].name.as_ref().unwrap(), "learning_rate");
            }
            _ => panic!("expected the optimizer"),
        }
    }

    #[test]
    fn reports_every_bad_item_and_keeps_the_good_ones() {
        let (model, diag) = parse(quote! {
            struct M {
                input x: [batch 784];
                paramm w: [784, 10] = zeros;
                param b: [10];
                let a = x;
            }
        });
        assert_eq!(diag.len(), 3, "{:?}", diag.messages());
        let model = model.unwrap();
        assert_eq!(model.items.len(), 1);
        let broken: Vec<String> = model.broken.iter().map(|b| b.to_string()).collect();
        assert_eq!(broken, ["x", "b"]);
        let messages = diag.messages();
        assert!(messages[1].contains("found `paramm`; did you mean `param`?"), "{}", messages[1]);
        assert!(messages[2].contains("expected `= initializer`"), "{}", messages[2]);
    }

    #[test]
    fn points_at_the_offending_token() {
        let src = "struct M {\n    input x: [batch, 784];\n    output o = x\n    loss l = x;\n}";
        let tokens: TokenStream = src.parse().unwrap();
        let (model, diag) = parse(tokens);
        assert_eq!(diag.len(), 1, "{:?}", diag.messages());
        assert_eq!(model.unwrap().items.len(), 3, "both items around the missing `;` are kept");
        let start = diag.errors()[0].span().start();
        assert_eq!((start.line, start.column), (4, 4), "{:?}", diag.messages());
    }

    #[test]
    fn rejects_frozen_on_non_params() {
        let (_, diag) = parse(quote! { struct M { #[frozen] input x: [3]; } });
        assert!(diag.messages()[0].contains("params only"));
    }
}
