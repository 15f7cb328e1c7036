//! `#[derive(ReplyError)]`: what each variant of an application's error does on the wire.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, LitInt, LitStr, Variant};

use crate::check;

/// What one variant becomes.
enum Wire {
    Reply { code: LitStr, message: LitStr },
    Close { code: u16, reason: LitStr },
    Internal,
}

pub(crate) fn expand(input: TokenStream) -> syn::Result<TokenStream> {
    let input: DeriveInput = syn::parse2(input)?;
    let Data::Enum(data) = &input.data else {
        return Err(syn::Error::new(
            input.ident.span(),
            "`ReplyError` derives for an enum whose variants each say what they do on the wire; \
             for a single error, use `palisade::json::ErrorReply` directly",
        ));
    };
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let mut outcome_arms = Vec::new();
    let mut from_arms = Vec::new();
    let mut descriptions = Vec::new();
    let mut codes: Vec<(String, Span)> = Vec::new();
    for variant in &data.variants {
        let wire = parse_variant(variant)?;
        let (pattern, details) = bind(variant);
        match &wire {
            Wire::Reply { code, message } => {
                if let Some((_, first)) = codes.iter().find(|(c, _)| *c == code.value()) {
                    let mut error = syn::Error::new(
                        code.span(),
                        format!(
                            "two variants reply with the code `{}`: a client could not tell \
                             them apart",
                            code.value()
                        ),
                    );
                    error.combine(syn::Error::new(*first, "the first is here"));
                    return Err(error);
                }
                codes.push((code.value(), code.span()));
                outcome_arms.push(quote! {
                    #pattern => ::palisade::__private::Outcome::Reply(
                        ::palisade::__private::typed::reply(#code, #message, #details)
                    ),
                });
                from_arms.push(from_reply_arm(variant, code));
                let keys = detail_keys(variant);
                descriptions.push(quote! {
                    ::palisade::__private::ErrorDescription::Reply {
                        code: ::std::string::String::from(#code),
                        message: ::std::string::String::from(#message),
                        details: ::std::vec![#(::std::string::String::from(#keys)),*],
                    }
                });
            }
            Wire::Close { code, reason } => {
                outcome_arms.push(quote! {
                    #pattern => ::palisade::__private::Outcome::Close(
                        ::palisade::__private::typed::close_frame(#code, #reason)
                    ),
                });
                descriptions.push(quote! {
                    ::palisade::__private::ErrorDescription::Close {
                        code: #code,
                        reason: ::std::string::String::from(#reason),
                    }
                });
            }
            Wire::Internal => {
                outcome_arms.push(quote! {
                    #pattern => ::palisade::__private::Outcome::Reply(
                        ::palisade::__private::ErrorReply::internal()
                    ),
                });
                descriptions.push(quote! { ::palisade::__private::ErrorDescription::Internal });
            }
        }
    }
    let outcome_body = if outcome_arms.is_empty() {
        quote! { match *self {} }
    } else {
        quote! {
            #[allow(unused_variables)]
            match self { #(#outcome_arms)* }
        }
    };
    Ok(quote! {
        impl #impl_generics ::palisade::__private::ReplyError for #ident #ty_generics #where_clause {
            fn outcome(&self) -> ::palisade::__private::Outcome {
                #outcome_body
            }
        }

        impl #impl_generics ::palisade::__private::FromReply for #ident #ty_generics #where_clause {
            fn from_reply(
                reply: &::palisade::__private::ErrorReply,
            ) -> ::std::option::Option<Self> {
                match reply.code().as_str() {
                    #(#from_arms)*
                    _ => ::std::option::Option::None,
                }
            }
        }

        impl #impl_generics ::palisade::__private::DescribeErrors for #ident #ty_generics #where_clause {
            fn describe_errors() -> ::std::vec::Vec<::palisade::__private::ErrorDescription> {
                ::std::vec![#(#descriptions),*]
            }
        }
    })
}

/// The variant's one wire attribute, checked.
fn parse_variant(variant: &Variant) -> syn::Result<Wire> {
    let mut found: Option<Wire> = None;
    for attr in &variant.attrs {
        let path = attr.path();
        let wire = if path.is_ident("reply") {
            let mut code = None;
            let mut message = None;
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("code") {
                    let lit: LitStr = meta.value()?.parse()?;
                    if let Some(why) = check::app_code(&lit.value()) {
                        return Err(syn::Error::new(lit.span(), why));
                    }
                    code = Some(lit);
                } else if meta.path.is_ident("message") {
                    message = Some(meta.value()?.parse::<LitStr>()?);
                } else {
                    return Err(meta.error("`#[reply]` takes `code = \"…\"` and `message = \"…\"`"));
                }
                Ok(())
            })?;
            let (Some(code), Some(message)) = (code, message) else {
                return Err(syn::Error::new(
                    attr.span(),
                    "`#[reply]` needs both `code = \"snake_case\"` and `message = \"…\"`",
                ));
            };
            Wire::Reply { code, message }
        } else if path.is_ident("close") {
            let mut code = None;
            let mut reason = None;
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("code") {
                    let lit: LitInt = meta.value()?.parse()?;
                    let value: u16 = lit.base10_parse().map_err(|_| {
                        syn::Error::new(lit.span(), "a close code is a number from 1000 to 4999")
                    })?;
                    if let Some(why) = check::close_code(value) {
                        return Err(syn::Error::new(lit.span(), why));
                    }
                    code = Some(value);
                } else if meta.path.is_ident("reason") {
                    let lit: LitStr = meta.value()?.parse()?;
                    if let Some(why) = check::close_reason(&lit.value()) {
                        return Err(syn::Error::new(lit.span(), why));
                    }
                    reason = Some(lit);
                } else {
                    return Err(meta.error("`#[close]` takes `code = 4000` and `reason = \"…\"`"));
                }
                Ok(())
            })?;
            let Some(code) = code else {
                return Err(syn::Error::new(attr.span(), "`#[close]` needs `code = …`"));
            };
            let reason = reason.unwrap_or_else(|| LitStr::new("", attr.span()));
            Wire::Close { code, reason }
        } else if path.is_ident("internal") {
            attr.meta.require_path_only()?;
            Wire::Internal
        } else {
            continue;
        };
        if found.is_some() {
            return Err(syn::Error::new(
                attr.span(),
                "a variant has one of `#[reply]`, `#[close]` or `#[internal]`, not several",
            ));
        }
        found = Some(wire);
    }
    found.ok_or_else(|| {
        syn::Error::new(
            variant.ident.span(),
            "say what this error does on the wire: `#[reply(code = \"…\", message = \"…\")]`, \
             `#[close(code = 4000, reason = \"…\")]` or `#[internal]`",
        )
    })
}

/// A pattern binding the variant's fields, and the expression of its `details`.
fn bind(variant: &Variant) -> (TokenStream, TokenStream) {
    let name = &variant.ident;
    let none = quote! { ::std::option::Option::None };
    match &variant.fields {
        Fields::Unit => (quote! { Self::#name }, none),
        Fields::Named(fields) => {
            let names: Vec<_> = fields.named.iter().filter_map(|f| f.ident.clone()).collect();
            let keys: Vec<_> = names.iter().map(|n| n.to_string()).collect();
            (
                quote! { Self::#name { #(#names),* } },
                quote! {
                    ::std::option::Option::Some(::palisade::__private::typed::details(&[
                        #((#keys, ::palisade::__private::serde_json::to_value(#names))),*
                    ]))
                },
            )
        }
        Fields::Unnamed(fields) => {
            let names: Vec<_> =
                (0..fields.unnamed.len()).map(|i| format_ident!("field_{}", i)).collect();
            let details = if names.len() == 1 {
                let only = &names[0];
                quote! {
                    ::palisade::__private::serde_json::to_value(#only).ok()
                }
            } else {
                quote! {
                    ::palisade::__private::serde_json::to_value((#(#names),*)).ok()
                }
            };
            (quote! { Self::#name ( #(#names),* ) }, details)
        }
    }
}

/// The `details` keys a reply variant carries.
fn detail_keys(variant: &Variant) -> Vec<String> {
    match &variant.fields {
        Fields::Named(fields) => {
            fields.named.iter().filter_map(|f| f.ident.as_ref().map(|i| i.to_string())).collect()
        }
        Fields::Unit | Fields::Unnamed(_) => Vec::new(),
    }
}

/// The arm of `from_reply` for a reply variant: its fields decoded from `details`.
fn from_reply_arm(variant: &Variant, code: &LitStr) -> TokenStream {
    let name = &variant.ident;
    let build = match &variant.fields {
        Fields::Unit => quote! { Self::#name },
        Fields::Named(fields) => {
            let inits = fields.named.iter().map(|f| {
                let field = f.ident.as_ref().expect("named fields have names");
                let key = field.to_string();
                let ty = &f.ty;
                quote_spanned! {ty.span()=>
                    #field: ::palisade::__private::typed::detail::<#ty>(reply, #key)?
                }
            });
            quote! { Self::#name { #(#inits),* } }
        }
        Fields::Unnamed(fields) => {
            let tys: Vec<_> = fields.unnamed.iter().map(|f| &f.ty).collect();
            if tys.len() == 1 {
                let ty = tys[0];
                quote_spanned! {ty.span()=>
                    Self::#name(::palisade::__private::typed::details_as::<#ty>(reply)?)
                }
            } else {
                let names: Vec<_> = (0..tys.len()).map(|i| format_ident!("field_{}", i)).collect();
                quote! {{
                    let (#(#names),*) =
                        ::palisade::__private::typed::details_as::<(#(#tys),*)>(reply)?;
                    Self::#name(#(#names),*)
                }}
            }
        }
    };
    quote! { #code => ::std::option::Option::Some(#build), }
}
