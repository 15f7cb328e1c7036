#[derive(Debug)]
struct Room;

#[derive(Debug, palisade::ReplyError)]
enum ChatError {
    #[reply(code = "room_full", message = "the room is full")]
    RoomFull { room: Room },
}

fn main() {}
