#[derive(Debug, palisade::ReplyError)]
enum ChatError {
    #[close(code = 1006, reason = "gone")]
    Gone,
}

fn main() {}
