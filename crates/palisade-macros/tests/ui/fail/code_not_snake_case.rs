#[derive(Debug, palisade::ReplyError)]
enum ChatError {
    #[reply(code = "RoomFull", message = "the room is full")]
    RoomFull,
}

fn main() {}
