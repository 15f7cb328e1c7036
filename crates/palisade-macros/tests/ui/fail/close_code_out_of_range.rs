#[derive(Debug, palisade::ReplyError)]
enum ChatError {
    #[close(code = 5000, reason = "banned")]
    Banned,
}

fn main() {}
