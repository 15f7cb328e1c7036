#[derive(Debug, palisade::ReplyError)]
enum ChatError {
    #[close(code = 4000, reason = "this reason is much longer than a close frame can carry, because a control frame holds at most one hundred and twenty five bytes")]
    Banned,
}

fn main() {}
