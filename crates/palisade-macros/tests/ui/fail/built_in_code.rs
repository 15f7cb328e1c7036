#[derive(Debug, palisade::ReplyError)]
enum ChatError {
    #[reply(code = "internal", message = "it broke")]
    Broke,
}

fn main() {}
