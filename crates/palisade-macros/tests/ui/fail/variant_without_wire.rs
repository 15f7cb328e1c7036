#[derive(Debug, palisade::ReplyError)]
enum ChatError {
    #[reply(code = "room_full", message = "the room is full")]
    RoomFull,
    Banned,
}

fn main() {}
