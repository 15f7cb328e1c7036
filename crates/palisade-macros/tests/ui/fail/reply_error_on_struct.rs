#[derive(Debug, palisade::ReplyError)]
struct ChatError {
    code: String,
}

fn main() {}
