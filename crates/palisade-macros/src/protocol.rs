//! `#[palisade::protocol]`: a trait of messages in, the server's dispatch, the pusher, the
//! typed client and the description out.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ItemTrait, LitStr, Pat, PathArguments, ReturnType,
    TraitItem, TraitItemFn, Type,
};

use crate::check;

/// What a method of the trait is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    Event,
    Push,
    Connect,
    Disconnect,
}

impl Kind {
    fn attribute(self) -> &'static str {
        match self {
            Self::Request => "#[request]",
            Self::Event => "#[event]",
            Self::Push => "#[push]",
            Self::Connect => "#[on_connect]",
            Self::Disconnect => "#[on_disconnect]",
        }
    }
}

/// One method of the trait, read and checked.
struct Method {
    kind: Kind,
    tag: Option<LitStr>,
    validate: bool,
    /// The method without our attributes.
    item: TraitItemFn,
    /// The doc comment's text.
    doc: String,
    /// Whether it takes the context argument.
    takes_cx: bool,
    /// The payload's type (requests, events, pushes).
    payload: Option<Type>,
    /// The future's output, `()` when none is written.
    output: Type,
}

/// Method names the generated code uses itself.
const RESERVED_HANDLERS: [&str; 2] = ["serve", "serve_socket"];
const RESERVED_PUSHES: [&str; 4] = ["new", "id", "is_closed", "closed"];
const RESERVED_CLIENT: [&str; 6] =
    ["new", "with_config", "with_timeout", "id", "close", "is_closed"];

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    if !attr.is_empty() {
        return Err(syn::Error::new(attr.span(), "`#[palisade::protocol]` takes no arguments"));
    }
    let item: ItemTrait = syn::parse2(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            "`#[palisade::protocol]` goes on a trait whose methods are the messages",
        )
    })?;
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            item.generics.span(),
            "a protocol trait takes no generic parameters: its messages are concrete types",
        ));
    }
    let mut methods = Vec::new();
    for trait_item in &item.items {
        let TraitItem::Fn(function) = trait_item else {
            return Err(syn::Error::new(
                trait_item.span(),
                "a protocol trait holds only its messages: methods marked #[request], #[event], \
                 #[push], #[on_connect] or #[on_disconnect]",
            ));
        };
        methods.push(read_method(function)?);
    }
    check_tags(&methods)?;
    for (kind, name) in [(Kind::Connect, "#[on_connect]"), (Kind::Disconnect, "#[on_disconnect]")] {
        let mut hooks = methods.iter().filter(|m| m.kind == kind);
        if let (Some(_), Some(second)) = (hooks.next(), hooks.next()) {
            return Err(syn::Error::new(
                second.item.sig.ident.span(),
                format!("a protocol has at most one {name} hook"),
            ));
        }
    }
    Ok(generate(&item, &methods))
}

/// Reads one method: its attribute, signature and types, refusing what cannot work.
fn read_method(function: &TraitItemFn) -> syn::Result<Method> {
    let mut kind = None;
    let mut tag = None;
    let mut validate = false;
    let mut item = function.clone();
    item.attrs.clear();
    for attr in &function.attrs {
        let found = if attr.path().is_ident("request") {
            Kind::Request
        } else if attr.path().is_ident("event") {
            Kind::Event
        } else if attr.path().is_ident("push") {
            Kind::Push
        } else if attr.path().is_ident("on_connect") {
            Kind::Connect
        } else if attr.path().is_ident("on_disconnect") {
            Kind::Disconnect
        } else {
            item.attrs.push(attr.clone());
            continue;
        };
        if kind.is_some() {
            return Err(syn::Error::new(
                attr.span(),
                "a method is one message: one of #[request], #[event], #[push], #[on_connect] or \
                 #[on_disconnect]",
            ));
        }
        kind = Some(found);
        match found {
            Kind::Request | Kind::Event | Kind::Push => {
                let (lit, validated) = read_tag(attr, found)?;
                tag = Some(lit);
                validate = validated;
            }
            Kind::Connect | Kind::Disconnect => attr.meta.require_path_only().map(|_| ())?,
        }
    }
    let sig = &function.sig;
    let Some(kind) = kind else {
        return Err(syn::Error::new(
            sig.ident.span(),
            "mark this method as a message: #[request(\"tag\")], #[event(\"tag\")], \
             #[push(\"tag\")], #[on_connect] or #[on_disconnect]",
        ));
    };
    let name = sig.ident.to_string();
    let reserved: &[&str] = if kind == Kind::Push { &RESERVED_PUSHES } else { &RESERVED_HANDLERS };
    if reserved.contains(&name.as_str())
        || (matches!(kind, Kind::Request | Kind::Event) && RESERVED_CLIENT.contains(&name.as_str()))
    {
        return Err(syn::Error::new(
            sig.ident.span(),
            format!("`{name}` is a method the macro generates; name this message differently"),
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "a message takes no generic parameters: the dispatch needs concrete types",
        ));
    }
    let doc = doc_text(&function.attrs);
    if kind == Kind::Push {
        return read_push(function, tag, item, doc);
    }
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span(),
            format!(
                "a {} handler is `async fn`: the server awaits it between messages",
                kind.attribute()
            ),
        ));
    }
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(receiver)) if receiver.reference.is_some() => {}
        Some(other @ FnArg::Receiver(_)) => {
            return Err(syn::Error::new(
                other.span(),
                "a handler takes `&mut self` (or `&self`): the connection's value lives as long \
                 as the connection",
            ));
        }
        _ => {
            return Err(syn::Error::new(
                sig.paren_token.span.join(),
                "a handler takes `&mut self` first: it is a method of the connection's value",
            ));
        }
    }
    let rest: Vec<&syn::PatType> = inputs
        .map(|arg| match arg {
            FnArg::Typed(typed) => Ok(typed),
            FnArg::Receiver(r) => Err(syn::Error::new(r.span(), "one receiver only")),
        })
        .collect::<syn::Result<_>>()?;
    // Without a return type, `()` takes the signature's span, so that an error about it
    // points at the method.
    let output = match &sig.output {
        ReturnType::Default => syn::parse_quote_spanned!(sig.ident.span()=> ()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    let (takes_cx, payload) = match kind {
        Kind::Request | Kind::Event => match rest.as_slice() {
            [payload] if !is_context(&payload.ty) => (false, Some(payload_type(payload)?)),
            [cx, payload] if is_context(&cx.ty) => (true, Some(payload_type(payload)?)),
            [cx, _] => return Err(context_error(&cx.ty)),
            _ => {
                return Err(syn::Error::new(
                    sig.paren_token.span.join(),
                    "a handler takes `(&mut self, cx: &Context<…Push>, payload: T)` (the context \
                     is optional); use `payload: ()` for a message without data",
                ));
            }
        },
        Kind::Connect => match rest.as_slice() {
            [] => (false, None),
            [cx] if is_context(&cx.ty) => (true, None),
            [other, ..] => {
                return Err(syn::Error::new(
                    other.span(),
                    "#[on_connect] takes `(&mut self)` or `(&mut self, cx: &Context<…Push>)`",
                ));
            }
        },
        Kind::Disconnect => match rest.as_slice() {
            [_ending] => (false, None),
            [cx, _ending] if is_context(&cx.ty) => (true, None),
            _ => {
                return Err(syn::Error::new(
                    sig.paren_token.span.join(),
                    "#[on_disconnect] takes `(&mut self, cx: &Context<…Push>, ending: &Error)` \
                     (the context is optional)",
                ));
            }
        },
        Kind::Push => unreachable!("pushes are read by read_push"),
    };
    if matches!(kind, Kind::Request) && matches!(sig.output, ReturnType::Default) {
        return Err(syn::Error::new(
            sig.paren_token.span.join(),
            "a request handler returns `Result<Reply, Error>`: the peer waits for the reply; \
             declare it with #[event(\"…\")] if it has none",
        ));
    }
    Ok(Method { kind, tag, validate, item, doc, takes_cx, payload, output })
}

/// `#[push("tag")] fn name(payload: T);`
fn read_push(
    function: &TraitItemFn,
    tag: Option<LitStr>,
    item: TraitItemFn,
    doc: String,
) -> syn::Result<Method> {
    let sig = &function.sig;
    let shape = "a push is declared as `fn name(payload: T);`: no `self`, no body, no return \
                 type; the macro writes its method on the pusher";
    if sig.asyncness.is_some()
        || function.default.is_some()
        || !matches!(sig.output, ReturnType::Default)
    {
        let span = function
            .default
            .as_ref()
            .map(|b| b.span())
            .or(sig.asyncness.map(|a| a.span()))
            .unwrap_or_else(|| sig.output.span());
        return Err(syn::Error::new(span, shape));
    }
    let args: Vec<_> = sig.inputs.iter().collect();
    let payload = match args.as_slice() {
        [FnArg::Typed(payload)] => payload_type(payload)?,
        _ => return Err(syn::Error::new(sig.paren_token.span.join(), shape)),
    };
    Ok(Method {
        kind: Kind::Push,
        tag,
        validate: false,
        item,
        doc,
        takes_cx: false,
        payload: Some(payload),
        output: syn::parse_quote!(()),
    })
}

/// `("tag")` or `("tag", validate)`.
fn read_tag(attr: &Attribute, kind: Kind) -> syn::Result<(LitStr, bool)> {
    let usage = format!("write {}(\"tag\")", &kind.attribute()[..kind.attribute().len() - 1]);
    let args = attr
        .parse_args_with(syn::punctuated::Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated)
        .map_err(|e| syn::Error::new(e.span(), &usage))?;
    let mut args = args.into_iter();
    let Some(syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(tag), .. })) = args.next() else {
        return Err(syn::Error::new(attr.span(), usage));
    };
    if let Some(why) = check::tag(&tag.value()) {
        return Err(syn::Error::new(tag.span(), why));
    }
    let mut validate = false;
    for arg in args {
        match &arg {
            syn::Expr::Path(path) if path.path.is_ident("validate") && kind != Kind::Push => {
                validate = true;
            }
            other => {
                return Err(syn::Error::new(
                    other.span(),
                    "the only option of a handler's tag is `validate` (check the payload's \
                     `Validate` rules before the handler runs)",
                ));
            }
        }
    }
    Ok((tag, validate))
}

fn payload_type(arg: &syn::PatType) -> syn::Result<Type> {
    if let Type::Reference(reference) = &*arg.ty {
        return Err(syn::Error::new(
            reference.span(),
            "a payload is owned (`T`, not `&T`): it is decoded from the message for the handler",
        ));
    }
    if !matches!(&*arg.pat, Pat::Ident(_) | Pat::Wild(_)) {
        return Err(syn::Error::new(arg.pat.span(), "name the payload argument (`payload: T`)"));
    }
    Ok((*arg.ty).clone())
}

/// Whether `ty` is `&Context<…>` (by its last path segment).
fn is_context(ty: &Type) -> bool {
    let Type::Reference(reference) = ty else { return false };
    let Type::Path(path) = &*reference.elem else { return false };
    path.path.segments.last().is_some_and(|s| s.ident == "Context")
}

fn context_error(ty: &Type) -> syn::Error {
    syn::Error::new(
        ty.span(),
        "the argument before the payload is the context: `cx: &Context<…Push>` \
         (`palisade::json::typed::Context`)",
    )
}

/// Two handlers for one tag, or two pushes with one tag, cannot be told apart.
fn check_tags(methods: &[Method]) -> syn::Result<()> {
    let mut seen: Vec<(bool, &LitStr, &Ident)> = Vec::new();
    for method in methods {
        let Some(tag) = &method.tag else { continue };
        let outgoing = method.kind == Kind::Push;
        if let Some((_, _, first)) =
            seen.iter().find(|(out, t, _)| *out == outgoing && t.value() == tag.value())
        {
            let what = if outgoing { "two pushes" } else { "two handlers" };
            return Err(syn::Error::new(
                tag.span(),
                format!(
                    "{what} for the tag \"{}\": `{first}` has it already; give each message its own tag",
                    tag.value()
                ),
            ));
        }
        seen.push((outgoing, tag, &method.item.sig.ident));
    }
    Ok(())
}

fn doc_text(attrs: &[Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        })
        .map(|line| line.strip_prefix(' ').map(str::to_owned).unwrap_or(line))
        .collect();
    lines.join("\n")
}

/// `Result<R, E>` written out, for readable client signatures; `None` for an alias.
fn result_parts(ty: &Type) -> Option<(Type, Type)> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else { return None };
    let mut types = args.args.iter().filter_map(|a| match a {
        GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    });
    let (ok, err) = (types.next()?, types.next()?);
    types.next().is_none().then_some((ok, err))
}

fn upper_camel(ident: &Ident) -> Ident {
    let camel: String = ident
        .to_string()
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    Ident::new(&camel, ident.span())
}

fn generate(item: &ItemTrait, methods: &[Method]) -> TokenStream {
    let vis = &item.vis;
    let name = &item.ident;
    let name_text = name.to_string();
    let push_ty = format_ident!("{}Push", name);
    let client_ty = format_ident!("{}Client", name);
    let pushed_ty = format_ident!("{}Pushed", name);
    let protocol_ty = format_ident!("{}Protocol", name);
    let incoming_ty = format_ident!("__{}Incoming", name);
    let trait_attrs = &item.attrs;
    let supertraits = &item.supertraits;
    let colon = item.colon_token;

    let handlers: Vec<&Method> =
        methods.iter().filter(|m| matches!(m.kind, Kind::Request | Kind::Event)).collect();
    let pushes: Vec<&Method> = methods.iter().filter(|m| m.kind == Kind::Push).collect();
    let connect = methods.iter().find(|m| m.kind == Kind::Connect);
    let disconnect = methods.iter().find(|m| m.kind == Kind::Disconnect);

    // The trait: each handler's `async fn` becomes a `Send` future, so that a server can run
    // `serve` in a task of its own.
    let trait_methods = methods.iter().filter(|m| m.kind != Kind::Push).map(|m| {
        let mut function = m.item.clone();
        function.sig.asyncness = None;
        let output = &m.output;
        function.sig.output = syn::parse_quote_spanned! {output.span()=>
            -> impl ::std::future::Future<Output = #output> + ::std::marker::Send
        };
        if let Some(body) = &function.default {
            function.default =
                Some(syn::parse_quote_spanned! {body.span()=> { async move #body } });
        }
        function
    });

    // The incoming messages, as palisade-json decodes them.
    let variants = handlers.iter().map(|m| {
        let variant = upper_camel(&m.item.sig.ident);
        let tag = m.tag.as_ref().expect("handlers have tags");
        let payload = m.payload.as_ref().expect("handlers have payloads");
        quote! { #[serde(rename = #tag)] #variant(#payload), }
    });
    let validations = handlers.iter().filter(|m| m.validate).map(|m| {
        let variant = upper_camel(&m.item.sig.ident);
        quote! { Self::#variant(payload) => ::palisade::__private::Validate::validate(payload), }
    });
    let dispatch = handlers.iter().map(|m| {
        let variant = upper_camel(&m.item.sig.ident);
        let method = &m.item.sig.ident;
        let tag = m.tag.as_ref().expect("handlers have tags");
        let output = &m.output;
        let call = if m.takes_cx {
            quote_spanned! {output.span()=> self.#method(&cx, payload).await }
        } else {
            quote_spanned! {output.span()=> self.#method(payload).await }
        };
        let answer = match m.kind {
            Kind::Request => quote_spanned! {output.span()=>
                ::palisade::__private::typed::answer(&cx, #tag, responder, #call).await
            },
            _ => quote_spanned! {output.span()=>
                ::palisade::__private::typed::acknowledge(&cx, #tag, responder, #call).await
            },
        };
        quote! { #incoming_ty::#variant(payload) => #answer, }
    });
    let on_connect = connect.map(|m| {
        let method = &m.item.sig.ident;
        let output = &m.output;
        let call = if m.takes_cx {
            quote_spanned! {output.span()=> self.#method(&cx) }
        } else {
            quote_spanned! {output.span()=> self.#method() }
        };
        let result = quote_spanned! {output.span()=> ::palisade::__private::EventResult::into_result(#call.await) };
        quote! {
            if let ::std::result::Result::Err(error) = #result {
                return ::palisade::__private::typed::refuse(&cx, &error).await;
            }
        }
    });
    let on_disconnect = disconnect.map(|m| {
        let method = &m.item.sig.ident;
        let call = if m.takes_cx {
            quote! { self.#method(&cx, &ending) }
        } else {
            quote! { self.#method(&ending) }
        };
        quote! { let _ = #call.await; }
    });

    // The server's pusher.
    let push_methods = pushes.iter().map(|m| {
        let method = &m.item.sig.ident;
        let tag = m.tag.as_ref().expect("pushes have tags");
        let payload = m.payload.as_ref().expect("pushes have payloads");
        let doc = push_doc(m);
        let emit = quote_spanned! {payload.span()=> ::palisade::__private::typed::emit(&self.sender, #tag, payload).await };
        quote! {
            #[doc = #doc]
            pub async fn #method(&self, payload: &#payload) -> ::std::result::Result<(), ::palisade::__private::Error> {
                #emit
            }
        }
    });

    // The client's side: its requests and events, and the pushes it receives.
    let client_methods = handlers.iter().map(|m| {
        let method = &m.item.sig.ident;
        let tag = m.tag.as_ref().expect("handlers have tags");
        let payload = m.payload.as_ref().expect("handlers have payloads");
        let doc = client_doc(m);
        match m.kind {
            Kind::Request => {
                let output = &m.output;
                let (reply, error) = result_parts(output).map_or_else(
                    || {
                        (
                            quote_spanned! {output.span()=> <#output as ::palisade::__private::RequestResult>::Reply },
                            quote_spanned! {output.span()=> <#output as ::palisade::__private::RequestResult>::Error },
                        )
                    },
                    |(ok, err)| (quote! { #ok }, quote! { #err }),
                );
                let call = quote_spanned! {output.span()=>
                    ::palisade::__private::typed::request::<#payload, #output>(&self.sender, #tag, payload, self.timeout).await
                };
                quote! {
                    #[doc = #doc]
                    pub async fn #method(
                        &self,
                        payload: &#payload,
                    ) -> ::std::result::Result<#reply, ::palisade::__private::CallError<#error>> {
                        #call
                    }
                }
            }
            _ => {
                let emit =
                    quote_spanned! {payload.span()=> ::palisade::__private::typed::emit(&self.sender, #tag, payload).await };
                quote! {
                    #[doc = #doc]
                    pub async fn #method(&self, payload: &#payload) -> ::std::result::Result<(), ::palisade::__private::Error> {
                        #emit
                    }
                }
            }
        }
    });
    let pushed_variants: Vec<_> = pushes
        .iter()
        .map(|m| {
            let variant = upper_camel(&m.item.sig.ident);
            let tag = m.tag.as_ref().expect("pushes have tags");
            let payload = m.payload.as_ref().expect("pushes have payloads");
            let doc = format!("`{}`: {}", tag.value(), first_line(&m.doc));
            (variant, tag.clone(), payload.clone(), doc)
        })
        .collect();
    let pushed_decl = pushed_variants.iter().map(|(variant, tag, payload, doc)| {
        quote! { #[doc = #doc] #[serde(rename = #tag)] #variant(#payload), }
    });
    let pushed_debug = pushed_variants.iter().map(|(variant, tag, _, _)| {
        quote! { Self::#variant(_) => f.write_str(#tag), }
    });
    let pushed_debug_body = if pushed_variants.is_empty() {
        quote! { match *self {} }
    } else {
        quote! { match self { #(#pushed_debug)* } }
    };

    // The description.
    let described = methods.iter().filter_map(|m| {
        let tag = m.tag.as_ref()?;
        let payload = m.payload.as_ref()?;
        let doc = &m.doc;
        let output = &m.output;
        let message = match m.kind {
            Kind::Request => quote_spanned! {output.span()=>
                ::palisade::__private::typed::describe_request::<#payload, #output>(#tag)
            },
            Kind::Event => quote_spanned! {output.span()=>
                ::palisade::__private::typed::describe_event::<#payload, #output>(#tag)
            },
            Kind::Push => quote_spanned! {payload.span()=> ::palisade::__private::typed::describe_push::<#payload>(#tag) },
            Kind::Connect | Kind::Disconnect => return None,
        };
        let validated = m.validate.then(|| quote! { .validated() });
        Some(quote! { .with_message(#message.with_doc(#doc) #validated) })
    });

    let push_doc_text = format!(
        "What the server may push to a client of [`{name}`]: one method per `#[push]`. Clone it to push from elsewhere."
    );
    let client_doc_text = format!(
        "A typed client of [`{name}`]: one method per request and event. Made with `new`, which \
         also returns the [`{pushed_ty}`] pushes; a task of its own receives for it."
    );
    let pushed_doc_text = format!("A push of [`{name}`], as its typed client receives it.");
    let protocol_doc_text = format!("The description of [`{name}`]: its tags and JSON Schemas.");
    let incoming_doc = format!("The messages a server of [`{name}`] receives.");

    quote! {
        #(#trait_attrs)*
        #vis trait #name #colon #supertraits {
            #(#trait_methods)*

            /// Serves one connection with this value: receives each message, runs its handler
            /// and answers it, until the connection is over. `Ok` after a clean close.
            fn serve(
                self,
                ws: ::palisade::__private::WebSocket,
            ) -> impl ::std::future::Future<Output = ::std::result::Result<(), ::palisade::__private::Error>> + ::std::marker::Send
            where
                Self: ::std::marker::Sized + ::std::marker::Send,
            {
                self.serve_socket(::palisade::__private::JsonSocket::new(ws))
            }

            /// [`Self::serve`] on a socket with a configuration of its own (limits, strikes).
            fn serve_socket(
                self,
                socket: ::palisade::__private::JsonSocket,
            ) -> impl ::std::future::Future<Output = ::std::result::Result<(), ::palisade::__private::Error>> + ::std::marker::Send
            where
                Self: ::std::marker::Sized + ::std::marker::Send,
            {
                self.serve_with(socket, &())
            }

            /// [`Self::serve_socket`] with a part of the protocol that another crate answers
            /// (a palisade-rooms `Session`: `room.join`, `room.leave`, …): each message whose
            /// tag the part owns goes to it, the others to this value's handlers.
            fn serve_with<Part: ::palisade::__private::ProtocolPart>(
                mut self,
                mut socket: ::palisade::__private::JsonSocket,
                part: &Part,
            ) -> impl ::std::future::Future<Output = ::std::result::Result<(), ::palisade::__private::Error>> + ::std::marker::Send
            where
                Self: ::std::marker::Sized + ::std::marker::Send,
            {
                async move {
                    let cx = ::palisade::__private::Context::new(#push_ty::new(socket.sender()), socket.sender());
                    #on_connect
                    let ending = loop {
                        let incoming = match socket.recv_validated::<::palisade::__private::Routed<Part::Message, #incoming_ty>>().await {
                            ::std::result::Result::Ok(incoming) => incoming,
                            ::std::result::Result::Err(error) => break error,
                        };
                        let (message, responder) = match incoming {
                            ::palisade::__private::Incoming::Event(message) => (message, ::std::option::Option::None),
                            ::palisade::__private::Incoming::Request(request) => {
                                (request.message, ::std::option::Option::Some(request.responder))
                            }
                        };
                        let handled = match message {
                            ::palisade::__private::Routed::Part(message) => part.handle(message, responder).await,
                            ::palisade::__private::Routed::App(message) => match message { #(#dispatch)* },
                        };
                        if let ::std::result::Result::Err(error) = handled {
                            break error;
                        }
                    };
                    #on_disconnect
                    ::palisade::__private::typed::ending(ending)
                }
            }
        }

        #[doc = #incoming_doc]
        #[doc(hidden)]
        #[derive(::palisade::__private::serde::Deserialize)]
        #[serde(crate = "::palisade::__private::serde", tag = "event", content = "data")]
        #[allow(clippy::enum_variant_names)]
        #vis enum #incoming_ty {
            #(#variants)*
        }

        impl ::palisade::__private::Validate for #incoming_ty {
            fn validate(&self) -> ::std::result::Result<(), ::palisade::__private::Invalid> {
                #[allow(unreachable_patterns)]
                match self {
                    #(#validations)*
                    _ => ::std::result::Result::Ok(()),
                }
            }
        }

        #[doc = #push_doc_text]
        #[derive(Clone, Debug)]
        #vis struct #push_ty {
            sender: ::palisade::__private::JsonSender,
        }

        impl #push_ty {
            /// The pusher of the connection `sender` belongs to.
            pub fn new(sender: ::palisade::__private::JsonSender) -> Self {
                Self { sender }
            }

            /// The connection's process-unique number.
            pub fn id(&self) -> ::palisade::__private::ConnectionId {
                self.sender.id()
            }

            /// Whether the connection is over.
            pub fn is_closed(&self) -> bool {
                self.sender.is_closed()
            }

            /// Resolves once the connection is over.
            pub async fn closed(&self) -> ::palisade::__private::ConnectionClosed {
                self.sender.closed().await
            }

            #(#push_methods)*
        }

        #[doc = #client_doc_text]
        #[derive(Clone, Debug)]
        #vis struct #client_ty {
            sender: ::palisade::__private::JsonSender,
            timeout: ::std::option::Option<::std::time::Duration>,
        }

        impl #client_ty {
            /// A client on a connection opened with the subprotocol `palisade.json.v1`, and the
            /// pushes it receives (at most 64 ahead of the application). Needs a tokio runtime.
            pub fn new(ws: ::palisade::__private::WebSocket) -> (Self, ::palisade::__private::Pushes<#pushed_ty>) {
                Self::with_config(ws, ::palisade::__private::JsonConfig::default(), ::palisade::__private::typed::DEFAULT_PUSH_CAPACITY)
            }

            /// [`Self::new`] with the JSON configuration and the number of pushes held.
            pub fn with_config(
                ws: ::palisade::__private::WebSocket,
                config: ::palisade::__private::JsonConfig,
                capacity: usize,
            ) -> (Self, ::palisade::__private::Pushes<#pushed_ty>) {
                let (sender, pushes) = ::palisade::__private::typed::start(ws, config, capacity);
                (Self { sender, timeout: ::std::option::Option::None }, pushes)
            }

            /// With a timeout for every request (instead of the configuration's).
            pub fn with_timeout(mut self, timeout: ::std::time::Duration) -> Self {
                self.timeout = ::std::option::Option::Some(timeout);
                self
            }

            /// The connection's process-unique number.
            pub fn id(&self) -> ::palisade::__private::ConnectionId {
                self.sender.id()
            }

            /// Whether the connection is over.
            pub fn is_closed(&self) -> bool {
                self.sender.is_closed()
            }

            /// Closes the connection with 1000.
            pub async fn close(&self) -> ::std::result::Result<(), ::palisade::__private::Error> {
                self.sender.raw().close(::palisade::__private::CloseCode::NORMAL, "").await
            }

            #(#client_methods)*
        }

        #[doc = #pushed_doc_text]
        #[derive(::palisade::__private::serde::Deserialize)]
        #[serde(crate = "::palisade::__private::serde", tag = "event", content = "data")]
        #vis enum #pushed_ty {
            #(#pushed_decl)*
        }

        impl ::std::fmt::Debug for #pushed_ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                #pushed_debug_body
            }
        }

        #[doc = #protocol_doc_text]
        #[derive(Clone, Copy, Debug)]
        #vis struct #protocol_ty;

        impl #protocol_ty {
            /// The protocol's name.
            pub const NAME: &'static str = #name_text;

            /// Every message with its tag, kind, documentation, JSON Schemas and errors.
            pub fn describe() -> ::palisade::__private::ProtocolDescription {
                ::palisade::__private::ProtocolDescription::new(#name_text)
                    #(#described)*
            }
        }
    }
}

fn first_line(doc: &str) -> &str {
    doc.lines().next().unwrap_or("").trim()
}

fn push_doc(m: &Method) -> String {
    let tag = m.tag.as_ref().map(LitStr::value).unwrap_or_default();
    let doc = first_line(&m.doc);
    format!("Pushes `{tag}`. {doc}")
}

fn client_doc(m: &Method) -> String {
    let tag = m.tag.as_ref().map(LitStr::value).unwrap_or_default();
    let doc = first_line(&m.doc);
    match m.kind {
        Kind::Request => format!("Sends the request `{tag}` and waits for its reply. {doc}"),
        _ => format!("Emits the event `{tag}`. {doc}"),
    }
}
